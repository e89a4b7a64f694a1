export * from './keys.js';
export * from './store.js';
export * from './sign.js';
export * from './command.js';
