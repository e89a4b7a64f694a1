export * from './deferred-index.js';
export * from './admin.js';
export * from './dead-letters.js';
