export * from './policy-client.js';
export * from './smtp-policy.js';
