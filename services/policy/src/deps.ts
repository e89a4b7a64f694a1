import { Directory } from '@mailyard/directory';
import type { Runtime } from '@mailyard/runtime';
import type { PolicyConfig } from './config.js';
import type { PolicyDeps } from './policy.js';

/**
 * The production wiring of the policy service, used by main.ts and by the tests (which
 * replace only what they must, e.g. the clock of greylisting and rate limits).
 */
export function defaultDeps(_config: PolicyConfig, rt: Runtime): PolicyDeps {
  return {
    bus: rt.bus,
    redis: rt.redis,
    directory: new Directory(rt.redis),
    resolver: rt.resolver,
    logger: rt.logger,
    registry: rt.registry,
  };
}
