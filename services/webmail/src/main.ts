import { AppPasswords, createAuthenticator, LoginGuard, TwoFactor, LoginHistory } from '@mailyard/auth';
import { Directory } from '@mailyard/directory';
import { runMain } from '@mailyard/runtime';
import { webmailSchema } from './config.js';
import { buildWebmail } from './webmail.js';

await runMain('webmail', webmailSchema, (config, rt) => {
  const directory = new Directory(rt.redis);
  return buildWebmail(config, {
    redis: rt.redis,
    directory,
    authenticator: createAuthenticator({
      directory,
      guard: new LoginGuard(rt.redis),
      appPasswords: new AppPasswords(rt.redis),
      history: new LoginHistory(rt.redis),
    }),
    twoFactor: new TwoFactor(rt.redis, new LoginGuard(rt.redis), { issuer: config.myhostname }),
    logger: rt.logger,
    registry: rt.registry,
  });
});
