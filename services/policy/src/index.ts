export * from './config.js';
export * from './policy.js';
export * from './deps.js';
export { toPolicyRequest, toPostfixAction } from './delegation.js';
export { clamdScan } from '@mailyard/policy-engine';
