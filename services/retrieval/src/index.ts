export * from './config.js';
export * from './retrieval.js';
