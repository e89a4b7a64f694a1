export * from './config.js';
export * from './metrics.js';
export * from './decider.js';
export * from './local-policy.js';
export { rspamdLearn } from './rspamd.js';
export { clamdScan } from './clamd.js';
