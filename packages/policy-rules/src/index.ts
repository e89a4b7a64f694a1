export * from './checks.js';
export * from './list-answer.js';
export * from './replies.js';
export * from './restrictions.js';
export * from './access.js';
export * from './keys.js';
export * from './store.js';
export * from './commands.js';
