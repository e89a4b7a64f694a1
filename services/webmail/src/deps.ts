import { AppPasswords, LoginGuard, LoginHistory, TwoFactor, createAuthenticator } from '@mailyard/auth';
import { Directory } from '@mailyard/directory';
import type { Runtime } from '@mailyard/runtime';
import type { WebmailConfig } from './config.js';
import type { WebmailDeps } from './webmail.js';

/**
 * The production wiring of the webmail, used by main.ts and by the tests (which replace
 * only what they must, e.g. a second factor): the shared login check, whose lockout
 * counts across every service.
 */
export function defaultDeps(config: WebmailConfig, rt: Runtime): WebmailDeps {
  const directory = new Directory(rt.redis);
  return {
    redis: rt.redis,
    directory,
    authenticator: createAuthenticator({
      directory,
      guard: new LoginGuard(rt.redis),
      appPasswords: new AppPasswords(rt.redis),
      history: new LoginHistory(rt.redis),
    }),
    twoFactor: new TwoFactor(rt.redis, new LoginGuard(rt.redis), { issuer: config.myhostname }),
    bus: rt.bus,
    logger: rt.logger,
    registry: rt.registry,
  };
}
