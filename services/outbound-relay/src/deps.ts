import { Directory } from '@mailyard/directory';
import type { Runtime } from '@mailyard/runtime';
import type { OutboundRelayConfig } from './config.js';
import type { OutboundRelayDeps } from './relay.js';

/**
 * The production wiring of outbound-relay, used by main.ts and by the tests (which
 * replace only what they must, e.g. the MTA-STS fetcher): MTA-STS policies fetched over
 * HTTPS, the real clock.
 */
export function defaultDeps(_config: OutboundRelayConfig, rt: Runtime): OutboundRelayDeps {
  return {
    bus: rt.bus,
    redis: rt.redis,
    resolver: rt.resolver,
    directory: new Directory(rt.redis),
    logger: rt.logger,
    registry: rt.registry,
  };
}
