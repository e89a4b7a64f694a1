export * from './replies.js';
export * from './address.js';
export * from './trace.js';
export * from './line-endings.js';
export * from './queue-id.js';
export * from './header-edits.js';
export * from './header-limits.js';
export * from './plural.js';
