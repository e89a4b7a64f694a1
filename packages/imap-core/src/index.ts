export * from './mutf7.js';
export * from './sequence.js';
export * from './framer.js';
export * from './parser.js';
export * from './mime.js';
export * from './render.js';
export * from './fetch-items.js';
export * from './search-keys.js';
