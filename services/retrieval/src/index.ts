export * from './config.js';
export * from './retrieval.js';
export * from './deps.js';
