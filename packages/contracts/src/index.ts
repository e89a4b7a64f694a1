export * from './bus-names.js';
export * from './envelope.js';
export * from './events.js';
export * from './policy.js';
export * from './parse.js';
export * from './catalogue.js';
