import { runMain } from '@mailyard/runtime';
import { policySchema } from './config.js';
import { defaultDeps } from './deps.js';
import { buildPolicy } from './policy.js';

await runMain('policy', policySchema, (config, rt) => buildPolicy(config, defaultDeps(config, rt)));
