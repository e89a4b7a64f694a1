export * from './tls-source.js';
export * from './acme.js';
export * from './metrics.js';
