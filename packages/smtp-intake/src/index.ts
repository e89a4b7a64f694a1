export * from './config.js';
export * from './intake.js';
export * from './metrics.js';
export * from './postmaster.js';
export * from './role.js';
export * from './submission-listener.js';
export * from './transaction.js';
