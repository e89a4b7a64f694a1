import { Directory } from '@mailyard/directory';
import { runMain } from '@mailyard/runtime';
import { mtaInboundSchema } from './config.js';
import { buildMtaInbound } from './inbound.js';

await runMain('mta-inbound', mtaInboundSchema, (config, rt) =>
  buildMtaInbound(config, {
    bus: rt.bus,
    directory: new Directory(rt.redis, config.recipient_delimiter, {
      cacheTtlMs: config.directory_cache_ttl,
    }),
    resolver: rt.resolver,
    redis: rt.redis,
    logger: rt.logger,
    registry: rt.registry,
  }),
);
