export * from './keys.js';
export * from './store.js';
export * from './sign.js';
// The `mailyard dkim` command group is `@mailyard/dkim/command`, so services do not load commander.
