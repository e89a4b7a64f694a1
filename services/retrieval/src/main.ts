import {
  AppPasswords,
  createAuthenticator,
  createServiceAuthorizer,
  CredentialCache,
  CredentialRevocations,
  LoginGuard,
  serviceLoginFromConfig,
  LoginHistory,
} from '@mailyard/auth';
import { Directory } from '@mailyard/directory';
import { runMain } from '@mailyard/runtime';
import { retrievalSchema } from './config.js';
import { buildRetrieval } from './retrieval.js';

await runMain('retrieval', retrievalSchema, (config, rt) => {
  const appPasswords = new AppPasswords(rt.redis);
  return buildRetrieval(config, {
    bus: rt.bus,
    redis: rt.redis,
    auth: createAuthenticator({
      directory: new Directory(rt.redis),
      guard: new LoginGuard(rt.redis),
      appPasswords,
      history: new LoginHistory(rt.redis),
      cache: new CredentialCache({ ttlMs: config.auth_cache_ttl, maxEntries: config.auth_cache_size }),
    }),
    revocations: new CredentialRevocations(rt.redis, appPasswords, (err) =>
      rt.logger.warn({ err }, 'app password revocations not checked'),
    ),
    serviceAuth: createServiceAuthorizer({
      directory: new Directory(rt.redis),
      guard: new LoginGuard(rt.redis),
      login: serviceLoginFromConfig(config),
    }),
    logger: rt.logger,
    registry: rt.registry,
  });
});
