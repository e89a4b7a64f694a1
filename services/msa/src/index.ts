export * from './config.js';
export * from './msa.js';
