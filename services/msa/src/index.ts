export * from './config.js';
export * from './msa.js';
export * from './deps.js';
