import { runMain } from '@mailyard/runtime';
import { msaSchema } from './config.js';
import { defaultDeps } from './deps.js';
import { buildMsa } from './msa.js';

await runMain('msa', msaSchema, (config, rt) => buildMsa(config, defaultDeps(config, rt)));
