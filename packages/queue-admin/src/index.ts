export * from './deferred-index.js';
export * from './admin.js';
