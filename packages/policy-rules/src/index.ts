export * from './restrictions.js';
export * from './access.js';
export * from './keys.js';
export * from './store.js';
export * from './commands.js';
