export * from './policy-client.js';
