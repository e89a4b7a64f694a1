#!/usr/bin/env node
// `mailyard` from a checkout (`pnpm exec mailyard ...`, or with node_modules/.bin on the
// PATH): the CLI's TypeScript source through tsx. The images run the bundle instead.
import { register } from 'tsx/esm/api';

register();
await import('../src/main.ts');
