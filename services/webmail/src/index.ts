export * from './config.js';
export * from './webmail.js';
export type { SecondFactor } from './context.js';
