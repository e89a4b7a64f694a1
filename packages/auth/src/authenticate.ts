import { setTimeout as sleep } from 'node:timers/promises';
import { accountAddress, type AccountRecord, type Directory } from '@mailyard/directory';
import type { AppPasswords } from './app-passwords.js';
import type { CachedCredential, CredentialCache } from './credential-cache.js';
import type { LoginGuard } from './lockout.js';
import type { LoginHistory, LoginProtocol } from './login-history.js';
import { sessionCredential, type AppPasswordCredential, type SessionCredential } from './revocations.js';

export type AuthResult =
  | {
      ok: true;
      account: string;
      via: 'password' | 'app-password';
      cached: boolean;
      /** With an app password: which one. */
      appPassword?: AppPasswordCredential;
      /** What the login was checked against, for CredentialRevocations.watch (the session ends when it changes). */
      credential: SessionCredential;
    }
  | { ok: false; reason: 'invalid' }
  /** The client's address is locked for this account (or for all), or held back during an attack on it. */
  | { ok: false; reason: 'locked'; retryAfterSeconds: number }
  /**
   * Redis (or anything else the check needs) failed: a temporary failure, to be
   * answered as one (SMTP 454 4.7.0, IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP]),
   * never as a wrong password and never as a login. Nothing was counted.
   */
  | { ok: false; reason: 'unavailable'; error: unknown };

export interface AuthRequest {
  ip: string;
  username: string;
  password: string;
  /**
   * The caller asks for the second factor itself after the password (the webmail). Without
   * it, an account with two-factor on is refused its password: IMAP, POP3 and submission
   * take only its app passwords, so a phished password alone opens nothing.
   */
  secondFactorFollows?: boolean;
  /**
   * Only the account's own password is accepted (the webmail: app passwords are for mail
   * clients, and one must not skip the second step). An app password is then not tried:
   * it is a wrong password, counted as one, and no login is recorded for it.
   */
  passwordOnly?: boolean;
  /** Where the login comes from; with it, a successful login is kept in the LoginHistory. */
  protocol?: LoginProtocol;
  /** What the client says it is (recorded with the login). */
  client?: string;
}

export interface Authenticator {
  authenticate(req: AuthRequest): Promise<AuthResult>;
}

/** Two-factor is on for the account whose record this is (TwoFactor keeps the secret there). */
const twoFactorOn = (record: AccountRecord | null | undefined) => !!record?.totp;

/** An administrator locked the account (Directory.setLocked): no credential of it logs in. */
const lockedOut = (record: AccountRecord | null | undefined) => !!record?.locked;

/**
 * What a cached login is checked against: the whole account record (so a changed
 * password hash, or any other change to the account, invalidates it) and, for an app
 * password, that app password's stored record.
 */
function storedCredential(account: AccountRecord, app: string | null): string {
  const fields = Object.entries(account).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify([fields, app]);
}

/**
 * The one login check of every protocol: the lockout first (an address locked for the
 * account, or held back while the account is under attack, is refused without
 * touching the password; see LoginGuard for the rule), then the account password,
 * then app passwords. Failures and successes are recorded for the shared lockout.
 *
 * With a `cache`, a login verified in the last few seconds is accepted without hashing
 * again, after the lockout check and after re-reading the stored credential it was
 * verified against (see CredentialCache).
 */
export function createAuthenticator(deps: {
  directory: Directory;
  guard: LoginGuard;
  appPasswords: AppPasswords;
  cache?: CredentialCache;
  /** Where successful logins that name their protocol are kept (the account page's list). */
  history?: LoginHistory;
}): Authenticator {
  const { directory, guard, appPasswords, cache } = deps;
  const history = deps.history;

  /** The stored credential a cached login stands for, and the app password's record when it is one. */
  const storedNow = async (
    user: string,
    c: CachedCredential,
  ): Promise<{ stored: string; app: AppPasswordCredential | null; record: AccountRecord } | null> => {
    if (c.via === 'password') {
      const rec = await directory.accountRecord(user);
      return rec && { stored: storedCredential(rec, null), app: null, record: rec };
    }
    const [rec, apps] = await Promise.all([directory.accountRecord(user), appPasswords.records(user)]);
    const app = apps[c.name];
    return rec && app !== undefined
      ? { stored: storedCredential(rec, app), app: { name: c.name, record: app }, record: rec }
      : null;
  };

  const check = async (req: AuthRequest): Promise<AuthResult> => {
    const { ip, password } = req;
    // the account as it was created: a login may spell an IDN domain in Unicode
    const user = accountAddress(req.username) ?? req.username.trim().toLowerCase();
    const verdict = await guard.check(ip, user);
    if (verdict.verdict === 'refuse')
      return { ok: false, reason: 'locked', retryAfterSeconds: verdict.retryAfterSeconds };
    // the account password of an account with two-factor on, where no second step follows:
    // refused exactly as a wrong password is (counted, same answer), so it tells nothing
    // so is every credential of a locked account
    const passwordRefused = (record: AccountRecord | null | undefined) =>
      lockedOut(record) || (twoFactorOn(record) && !req.secondFactorFollows);
    if (user && password) {
      let app: AppPasswordCredential | null = null;
      let record: AccountRecord | null = null;
      let refused = false;
      const hit = await cache?.get(user, password, async (c) => {
        const now = await storedNow(user, c);
        app = now?.app ?? null;
        record = now?.record ?? null;
        if (
          now &&
          (c.via === 'password' ? passwordRefused(now.record) : lockedOut(now.record) || req.passwordOnly)
        )
          refused = true;
        return now?.stored ?? null;
      });
      if (hit && !refused && record) {
        await guard.recordSuccess(ip, hit.account);
        return {
          ok: true,
          account: hit.account,
          via: hit.credential.via,
          cached: true,
          ...(app ? { appPassword: app } : {}),
          credential: sessionCredential(record, hit.credential.via, app ?? undefined),
        };
      }
      const checked = hit ? null : await directory.checkPassword(user, password);
      if (checked && !passwordRefused(checked.record)) {
        cache?.remember(
          user,
          password,
          checked.account,
          { via: 'password' },
          storedCredential(checked.record, null),
        );
        await guard.recordSuccess(ip, checked.account);
        return {
          ok: true,
          account: checked.account,
          via: 'password',
          cached: false,
          credential: sessionCredential(checked.record, 'password'),
        };
      }
      const rec = checked || req.passwordOnly ? null : await directory.accountRecord(user);
      const matched = rec && !lockedOut(rec) ? await appPasswords.match(user, password) : null;
      if (rec && matched) {
        cache?.remember(
          user,
          password,
          user,
          { via: 'app-password', name: matched.name },
          storedCredential(rec, matched.record),
        );
        await guard.recordSuccess(ip, user);
        return {
          ok: true,
          account: user,
          via: 'app-password',
          cached: false,
          appPassword: matched,
          credential: sessionCredential(rec, 'app-password', matched),
        };
      }
    }
    const { delayMs } = await guard.recordFailure(ip, user || '(none)');
    // an account under attack answers failures slowly (the right password at once)
    if (delayMs) await sleep(delayMs);
    return { ok: false, reason: 'invalid' };
  };

  return {
    async authenticate(req) {
      try {
        const res = await check(req);
        if (res.ok && history && req.protocol) {
          // best effort: a login is not refused because its record could not be written
          history
            .record(res.account, {
              protocol: req.protocol,
              ip: req.ip,
              via: res.via,
              ...(req.client ? { client: req.client.slice(0, 200) } : {}),
              ...(res.appPassword ? { appPassword: res.appPassword.name } : {}),
            })
            .catch(() => undefined);
        }
        return res;
      } catch (error) {
        return { ok: false, reason: 'unavailable', error };
      }
    },
  };
}
