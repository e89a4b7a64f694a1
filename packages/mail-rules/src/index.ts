export * from './settings.js';
export * from './headers.js';
export * from './auto-reply.js';
