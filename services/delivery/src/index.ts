export * from './config.js';
export * from './delivery.js';
export * from './deps.js';
