export * from './config.js';
export * from './inbound.js';
