export * from './topology.js';
export * from './errors.js';
export * from './bus.js';
export { DIRECT_REPLY_TO } from './rpc.js';
export { within } from '@mailyard/config';
