import { DkimKeyStore, DkimSigner } from '@mailyard/dkim';
import { Directory } from '@mailyard/directory';
import { MaildirStore } from '@mailyard/mailstore';
import type { Runtime } from '@mailyard/runtime';
import type { DeliveryConfig } from './config.js';
import type { DeliveryDeps } from './delivery.js';

/**
 * The production wiring of delivery, used by main.ts and by the tests (which replace
 * only what they must): recipient lookups cached for DIRECTORY_CACHE_TTL, aliases
 * expanded up to ALIAS_EXPANSION_LIMIT, the Maildir store under MAILDIR_ROOT.
 */
export function defaultDeps(config: DeliveryConfig, rt: Runtime): DeliveryDeps {
  const directory = new Directory(rt.redis, config.recipient_delimiter, {
    cacheTtlMs: config.directory_cache_ttl,
    aliasExpansionLimit: config.alias_expansion_limit,
  });
  rt.onClose(() => directory.close());
  return {
    bus: rt.bus,
    redis: rt.redis,
    directory,
    store: new MaildirStore({ root: config.maildir_root, hostname: config.myhostname }),
    logger: rt.logger,
    registry: rt.registry,
    dkim: new DkimSigner(new DkimKeyStore(rt.redis)),
  };
}
