import {
  AppPasswords,
  CredentialRevocations,
  LoginGuard,
  createAuthenticator,
  LoginHistory,
  createServiceAuthorizer,
  serviceLoginFromConfig,
} from '@mailyard/auth';
import { Directory } from '@mailyard/directory';
import { DkimKeyStore, DkimSigner } from '@mailyard/dkim';
import type { Runtime } from '@mailyard/runtime';
import type { Redis } from 'ioredis';
import type { MsaConfig } from './config.js';
import type { MsaDeps } from './msa.js';

/** Parts of the default wiring a caller may supply instead. */
export interface MsaParts {
  /** The login lockout (default: on the runtime's Redis). */
  guard?: LoginGuard;
  /** The Redis the DKIM keys are read from (default: the runtime's). */
  dkimRedis?: Redis;
}

/**
 * The production wiring of the MSA, used by main.ts and by the tests (which replace
 * only what they must): the shared login check with the lockout and app passwords, the
 * webmail's service login, DKIM signing with keys from Redis when DKIM_SIGNING is on.
 */
export function defaultDeps(config: MsaConfig, rt: Runtime, parts: MsaParts = {}): MsaDeps {
  const directory = new Directory(rt.redis, config.recipient_delimiter);
  const appPasswords = new AppPasswords(rt.redis);
  const guard = parts.guard ?? new LoginGuard(rt.redis);
  return {
    bus: rt.bus,
    directory,
    authenticator: createAuthenticator({
      directory,
      guard,
      appPasswords,
      history: new LoginHistory(rt.redis),
    }),
    revocations: new CredentialRevocations(rt.redis, appPasswords, (err) =>
      rt.logger.warn(
        { err },
        'credential changes not checked: sessions are checked again when Redis answers',
      ),
    ),
    serviceAuth: createServiceAuthorizer({ directory, guard, login: serviceLoginFromConfig(config) }),
    resolver: rt.resolver,
    redis: rt.redis,
    dkim: config.dkim_signing ? new DkimSigner(new DkimKeyStore(parts.dkimRedis ?? rt.redis)) : null,
    logger: rt.logger,
    registry: rt.registry,
  };
}
