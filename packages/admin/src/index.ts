export * from './addresses.js';
export * from './audit.js';
export * from './errors.js';
export * from './operations.js';
export * from './dns-records.js';
export * from './dns-check.js';
