export * from './policy-client.js';
export * from './smtp-policy.js';
export * from './circuit-breaker.js';
export * from './default-action.js';
