export * from './lockout.js';
export * from './app-passwords.js';
export * from './authenticate.js';
export * from './credential-cache.js';
export * from './revocations.js';
export * from './client-limits.js';
export * from './service-login.js';
export * from './two-factor.js';
