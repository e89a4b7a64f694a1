import {
  AppPasswords,
  CredentialRevocations,
  LoginGuard,
  createAuthenticator,
  createServiceAuthorizer,
  serviceLoginFromConfig,
  LoginHistory,
} from '@mailyard/auth';
import { Directory } from '@mailyard/directory';
import { DkimKeyStore, DkimSigner } from '@mailyard/dkim';
import { runMain } from '@mailyard/runtime';
import { msaSchema } from './config.js';
import { buildMsa } from './msa.js';

await runMain('msa', msaSchema, (config, rt) => {
  const directory = new Directory(rt.redis, config.recipient_delimiter);
  const appPasswords = new AppPasswords(rt.redis);
  return buildMsa(config, {
    bus: rt.bus,
    directory,
    authenticator: createAuthenticator({
      directory,
      guard: new LoginGuard(rt.redis),
      appPasswords,
      history: new LoginHistory(rt.redis),
    }),
    revocations: new CredentialRevocations(rt.redis, appPasswords, (err) =>
      rt.logger.warn({ err }, 'app password revocations not checked'),
    ),
    serviceAuth: createServiceAuthorizer({
      directory,
      guard: new LoginGuard(rt.redis),
      login: serviceLoginFromConfig(config),
    }),
    resolver: rt.resolver,
    redis: rt.redis,
    dkim: config.dkim_signing ? new DkimSigner(new DkimKeyStore(rt.redis)) : null,
    logger: rt.logger,
    registry: rt.registry,
  });
});
