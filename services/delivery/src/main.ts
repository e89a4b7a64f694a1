import { Directory } from '@mailyard/directory';
import { MaildirStore } from '@mailyard/mailstore';
import { runMain } from '@mailyard/runtime';
import { deliverySchema } from './config.js';
import { buildDelivery } from './delivery.js';

await runMain('delivery', deliverySchema, (config, rt) =>
  buildDelivery(config, {
    bus: rt.bus,
    redis: rt.redis,
    directory: new Directory(rt.redis, config.recipient_delimiter, {
      cacheTtlMs: config.directory_cache_ttl,
    }),
    store: new MaildirStore({ root: config.maildir_root, hostname: config.myhostname }),
    logger: rt.logger,
    registry: rt.registry,
  }),
);
