export * from './maildir.js';
