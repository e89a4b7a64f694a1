export * from './directory.js';
export * from './passwords.js';
