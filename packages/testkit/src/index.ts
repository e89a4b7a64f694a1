export * from './dns-server.js';
export * from './rabbit.js';
export * from './redis.js';
export * from './tcp-proxy.js';
export * from './wait.js';
export * from './smtp-raw.js';
export * from './files.js';
export * from './scanners.js';
