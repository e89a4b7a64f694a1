export * from './config.js';
export * from './delivery.js';
