import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError, ipInNetworks, parseCidr, type Cidr } from '@mailyard/config';
import type { Directory } from '@mailyard/directory';
import type { AuthRequest, AuthResult, Authenticator } from './authenticate.js';
import type { LoginGuard } from './lockout.js';
import { sessionCredential, type AppPasswordCredential, type SessionCredential } from './revocations.js';

/**
 * A service that logs in with its own secret and then acts for a user: the webmail, which
 * checks the user's password once at its own login and never keeps it. It speaks SASL
 * PLAIN with an authorisation identity (RFC 4616 §2: authzid NUL authcid NUL password),
 * as Dovecot's master users do.
 */
export interface ServiceLogin {
  /** The authentication identity (authcid); never an address, so it cannot be an account. */
  name: string;
  password: string;
  /** Where it may log in from; anyone else naming it is refused before the secret is looked at. */
  networks: readonly string[];
}

export type AuthorizeResult =
  | { ok: true; account: string; service: string; credential: SessionCredential }
  | { ok: false; reason: 'invalid' }
  | { ok: false; reason: 'locked'; retryAfterSeconds: number }
  | { ok: false; reason: 'unavailable'; error: unknown };

export interface ServiceAuthorizer {
  /**
   * Checks `service`'s secret and network and that `user` is an account; the result names
   * the account the session acts for. Any other authcid with a foreign authzid is refused
   * the same way a wrong password is: a user cannot act as someone else.
   */
  authorizeAs(req: { ip: string; service: string; password: string; user: string }): Promise<AuthorizeResult>;
}

/** The text every login path logs for such a session: "webmail for alice@example.org". */
export const actingFor = (service: string, account: string) => `${service} for ${account}`;

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/**
 * `login` null (no secret configured): nobody may act for another user. A wrong secret
 * from the service's networks counts in the shared lockout under the address and the
 * service's name, so guessing it is throttled as guessing a password is. Anything else is
 * refused before the secret is looked at, which tells a guesser nothing and so is not
 * counted: nobody outside the networks can lock the service out.
 */
export function createServiceAuthorizer(deps: {
  directory: Directory;
  guard: LoginGuard;
  login: ServiceLogin | null;
}): ServiceAuthorizer {
  const { directory, guard, login } = deps;
  const networks: Cidr[] = (login?.networks ?? []).map((n) => parseCidr(n)).filter((c) => c !== null);
  const secret = login ? digest(login.password) : null;
  return {
    async authorizeAs({ ip, service, password, user }) {
      const name = service.trim().toLowerCase();
      const account = user.trim().toLowerCase();
      // refused without looking at the secret, so there is nothing to guess and nothing to count
      if (!login || !secret || name !== login.name.toLowerCase() || !ipInNetworks(ip, networks)) {
        return { ok: false, reason: 'invalid' };
      }
      try {
        const lock = await guard.check(ip, login.name);
        if (lock.verdict === 'refuse')
          return { ok: false, reason: 'locked', retryAfterSeconds: lock.retryAfterSeconds };
        if (!timingSafeEqual(digest(password), secret)) {
          await guard.recordFailure(ip, login.name);
          return { ok: false, reason: 'invalid' };
        }
        // a locked account is not acted for either (the webmail of a locked user stops too)
        const record = account ? await directory.accountRecord(account) : null;
        if (!record || record.locked) return { ok: false, reason: 'invalid' };
        return { ok: true, account, service: login.name, credential: sessionCredential(record, 'service') };
      } catch (error) {
        // a lockout or directory that cannot be read is a temporary failure, never a login
        return { ok: false, reason: 'unavailable', error };
      }
    },
  };
}

/**
 * The service login from a service's config (`service_login_*`): null when no secret is
 * set. The secret comes from `service_login_password` or the file `service_login_password_file`
 * names (a container secret; one trailing newline is dropped).
 */
export function serviceLoginFromConfig(config: {
  service_login_name: string;
  service_login_password?: string | undefined;
  service_login_password_file?: string | undefined;
  service_login_networks?: readonly string[];
}): ServiceLogin | null {
  let password = config.service_login_password ?? '';
  if (!password && config.service_login_password_file) {
    try {
      password = readFileSync(config.service_login_password_file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new ConfigError([
        `SERVICE_LOGIN_PASSWORD_FILE: cannot read ${config.service_login_password_file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      ]);
    }
    if (!password)
      throw new ConfigError([`SERVICE_LOGIN_PASSWORD_FILE: ${config.service_login_password_file} is empty`]);
  }
  if (!password) return null;
  return { name: config.service_login_name, password, networks: config.service_login_networks ?? [] };
}

export type LoginResult =
  | {
      ok: true;
      account: string;
      via: Extract<AuthResult, { ok: true }>['via'] | 'service';
      cached: boolean;
      /** With `via: 'service'`: the service acting for the account. */
      service?: string;
      /** With an app password: which one (see AuthResult). */
      appPassword?: AppPasswordCredential;
      /** What the login was checked against (see AuthResult). */
      credential: SessionCredential;
    }
  | Exclude<AuthResult, { ok: true }>;

/**
 * The login of every protocol that takes SASL PLAIN: without an authzid, or with the
 * login's own, the user's password; with another one, the service login (refused when
 * there is none).
 */
export async function logIn(
  auth: Authenticator,
  services: ServiceAuthorizer | undefined,
  req: AuthRequest & { authzid?: string },
): Promise<LoginResult> {
  const authzid = (req.authzid ?? '').trim();
  if (!authzid || authzid.toLowerCase() === req.username.trim().toLowerCase()) return auth.authenticate(req);
  const res = services
    ? await services.authorizeAs({ ip: req.ip, service: req.username, password: req.password, user: authzid })
    : ({ ok: false, reason: 'invalid' } as const);
  return res.ok
    ? {
        ok: true,
        account: res.account,
        via: 'service',
        cached: false,
        service: res.service,
        credential: res.credential,
      }
    : res;
}
