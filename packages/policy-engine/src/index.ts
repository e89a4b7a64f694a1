export * from './config.js';
export * from './metrics.js';
export * from './decider.js';
export * from './local-policy.js';
export { UserListCopy } from './user-list-copy.js';
export { AccessTables, tablesOf } from './access-copy.js';
export { rspamdLearn } from './rspamd.js';
export { clamdScan } from './clamd.js';
