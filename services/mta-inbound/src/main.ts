import { runMain } from '@mailyard/runtime';
import { mtaInboundSchema } from './config.js';
import { defaultDeps } from './deps.js';
import { buildMtaInbound } from './inbound.js';

await runMain('mta-inbound', mtaInboundSchema, (config, rt) =>
  buildMtaInbound(config, defaultDeps(config, rt)),
);
