import {
  AppPasswords,
  CredentialCache,
  CredentialRevocations,
  LoginGuard,
  createAuthenticator,
  LoginHistory,
  createServiceAuthorizer,
  serviceLoginFromConfig,
} from '@mailyard/auth';
import { Directory } from '@mailyard/directory';
import type { Runtime } from '@mailyard/runtime';
import type { RetrievalConfig } from './config.js';
import type { RetrievalDeps } from './retrieval.js';

/** Parts of the default wiring a caller may supply instead. */
export interface RetrievalParts {
  /** The login lockout (default: on the runtime's Redis). */
  guard?: LoginGuard;
}

/**
 * The production wiring of retrieval, used by main.ts and by the tests (which replace
 * only what they must): the shared login check with the lockout, app passwords and the
 * in-process cache of verified logins (AUTH_CACHE_TTL, AUTH_CACHE_SIZE), the webmail's
 * service login.
 */
export function defaultDeps(config: RetrievalConfig, rt: Runtime, parts: RetrievalParts = {}): RetrievalDeps {
  const directory = new Directory(rt.redis);
  const appPasswords = new AppPasswords(rt.redis);
  const guard = parts.guard ?? new LoginGuard(rt.redis);
  return {
    bus: rt.bus,
    redis: rt.redis,
    auth: createAuthenticator({
      directory,
      guard,
      appPasswords,
      history: new LoginHistory(rt.redis),
      cache: new CredentialCache({ ttlMs: config.auth_cache_ttl, maxEntries: config.auth_cache_size }),
    }),
    revocations: new CredentialRevocations(rt.redis, appPasswords, (err) =>
      rt.logger.warn(
        { err },
        'credential changes not checked: sessions are checked again when Redis answers',
      ),
    ),
    serviceAuth: createServiceAuthorizer({ directory, guard, login: serviceLoginFromConfig(config) }),
    logger: rt.logger,
    registry: rt.registry,
  };
}
