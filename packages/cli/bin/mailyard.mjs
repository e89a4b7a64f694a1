#!/usr/bin/env node
// `mailyard` from a checkout (`pnpm mailyard ...`, or with node_modules/.bin on the PATH):
// the bundle (`pnpm build`), as the images run it, while it is current; otherwise (a source
// edited or pulled since the build, or no build) the TypeScript source through tsx, so what
// runs is always what the checkout says.
import { fileURLToPath } from 'node:url';
import { bundleIsCurrent } from '../../../scripts/bundle-current.mjs';

const dist = fileURLToPath(new URL('../dist/', import.meta.url));
if (bundleIsCurrent(dist)) {
  await import(new URL('../dist/main.js', import.meta.url).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/main.ts');
}
