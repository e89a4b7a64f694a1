export * from './load.js';
export * from './fields.js';
export * from './common.js';
export * from './tls.js';
export * from './shared.js';
export * from './service-login.js';
export * from './deadline.js';
export * from './boot-checks.js';
