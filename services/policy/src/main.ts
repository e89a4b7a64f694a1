import { Directory } from '@mailyard/directory';
import { runMain } from '@mailyard/runtime';
import { policySchema } from './config.js';
import { buildPolicy } from './policy.js';

await runMain('policy', policySchema, (config, rt) =>
  buildPolicy(config, {
    bus: rt.bus,
    redis: rt.redis,
    directory: new Directory(rt.redis),
    resolver: rt.resolver,
    logger: rt.logger,
    registry: rt.registry,
  }),
);
