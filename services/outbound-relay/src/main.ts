import { runMain } from '@mailyard/runtime';
import { outboundRelaySchema } from './config.js';
import { defaultDeps } from './deps.js';
import { buildOutboundRelay } from './relay.js';

await runMain('outbound-relay', outboundRelaySchema, (config, rt) =>
  buildOutboundRelay(config, defaultDeps(config, rt)),
);
