import {
  AppPasswords,
  createAuthenticator,
  createServiceAuthorizer,
  CredentialCache,
  LoginGuard,
  serviceLoginFromConfig,
} from '@mailyard/auth';
import { Directory } from '@mailyard/directory';
import { runMain } from '@mailyard/runtime';
import { retrievalSchema } from './config.js';
import { buildRetrieval } from './retrieval.js';

await runMain('retrieval', retrievalSchema, (config, rt) =>
  buildRetrieval(config, {
    bus: rt.bus,
    redis: rt.redis,
    auth: createAuthenticator({
      directory: new Directory(rt.redis),
      guard: new LoginGuard(rt.redis),
      appPasswords: new AppPasswords(rt.redis),
      cache: new CredentialCache({ ttlMs: config.auth_cache_ttl, maxEntries: config.auth_cache_size }),
    }),
    serviceAuth: createServiceAuthorizer({
      directory: new Directory(rt.redis),
      guard: new LoginGuard(rt.redis),
      login: serviceLoginFromConfig(config),
    }),
    logger: rt.logger,
    registry: rt.registry,
  }),
);
