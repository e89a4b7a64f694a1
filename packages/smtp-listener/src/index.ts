export * from './proxy-protocol.js';
export * from './listener.js';
