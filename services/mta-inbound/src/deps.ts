import { Directory } from '@mailyard/directory';
import type { Runtime } from '@mailyard/runtime';
import type { MtaInboundConfig } from './config.js';
import type { MtaInboundDeps } from './inbound.js';

/**
 * The production wiring of mta-inbound, used by main.ts and by the tests (which replace
 * only what they must): recipient lookups cached for DIRECTORY_CACHE_TTL, the per-client
 * connection rate counted in Redis across instances.
 */
export function defaultDeps(config: MtaInboundConfig, rt: Runtime): MtaInboundDeps {
  const directory = new Directory(rt.redis, config.recipient_delimiter, {
    cacheTtlMs: config.directory_cache_ttl,
  });
  rt.onClose(() => directory.close());
  return {
    bus: rt.bus,
    directory,
    resolver: rt.resolver,
    redis: rt.redis,
    logger: rt.logger,
    registry: rt.registry,
  };
}
