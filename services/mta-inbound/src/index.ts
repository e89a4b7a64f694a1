export * from './config.js';
export * from './inbound.js';
export * from './deps.js';
