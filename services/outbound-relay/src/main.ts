import { Directory } from '@mailyard/directory';
import { runMain } from '@mailyard/runtime';
import { outboundRelaySchema } from './config.js';
import { buildOutboundRelay } from './relay.js';

await runMain('outbound-relay', outboundRelaySchema, (config, rt) =>
  buildOutboundRelay(config, {
    bus: rt.bus,
    redis: rt.redis,
    resolver: rt.resolver,
    directory: new Directory(rt.redis),
    logger: rt.logger,
    registry: rt.registry,
  }),
);
