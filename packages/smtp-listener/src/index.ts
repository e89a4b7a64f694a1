export * from './proxy-protocol.js';
export * from './listener.js';
export * from './session.js';
export * from './deadlines.js';
