import { runMain } from '@mailyard/runtime';
import { webmailSchema } from './config.js';
import { defaultDeps } from './deps.js';
import { buildWebmail } from './webmail.js';

await runMain('webmail', webmailSchema, (config, rt) => buildWebmail(config, defaultDeps(config, rt)));
