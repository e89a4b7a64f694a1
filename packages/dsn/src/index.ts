export * from './dsn.js';
