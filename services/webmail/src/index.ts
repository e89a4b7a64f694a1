export * from './config.js';
export * from './webmail.js';
export * from './deps.js';
export type { SecondFactor } from './context.js';
