import { runMain } from '@mailyard/runtime';
import { retrievalSchema } from './config.js';
import { defaultDeps } from './deps.js';
import { buildRetrieval } from './retrieval.js';

await runMain('retrieval', retrievalSchema, (config, rt) => buildRetrieval(config, defaultDeps(config, rt)));
