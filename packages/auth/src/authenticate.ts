import type { Directory } from '@mailyard/directory';
import type { AppPasswords } from './app-passwords.js';
import type { LoginGuard } from './lockout.js';

export type AuthResult =
  | { ok: true; account: string; via: 'password' | 'app-password' }
  | { ok: false; reason: 'invalid' }
  | { ok: false; reason: 'locked'; retryAfterSeconds: number };

export interface Authenticator {
  authenticate(req: { ip: string; username: string; password: string }): Promise<AuthResult>;
}

/**
 * The one login check of every protocol: lockout first (a locked account or IP is
 * refused without touching the password), then the account password, then app
 * passwords. Failures and successes are recorded for the shared lockout.
 */
export function createAuthenticator(deps: {
  directory: Directory;
  guard: LoginGuard;
  appPasswords: AppPasswords;
}): Authenticator {
  return {
    async authenticate({ ip, username, password }) {
      const user = username.trim().toLowerCase();
      const lock = await deps.guard.check(ip, user);
      if (lock.locked) return { ok: false, reason: 'locked', retryAfterSeconds: lock.retryAfterSeconds };
      if (user && password) {
        const account = await deps.directory.authenticate(user, password);
        if (account) {
          await deps.guard.recordSuccess(ip, account);
          return { ok: true, account, via: 'password' };
        }
        if ((await deps.directory.accountExists(user)) && (await deps.appPasswords.verify(user, password))) {
          await deps.guard.recordSuccess(ip, user);
          return { ok: true, account: user, via: 'app-password' };
        }
      }
      await deps.guard.recordFailure(ip, user || '(none)');
      return { ok: false, reason: 'invalid' };
    },
  };
}
