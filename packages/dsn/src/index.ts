export * from './dsn.js';
export * from './return.js';
