import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { endWebmailSessions, webmailSessionsKey } from '@mailyard/auth';

/** What a session is waiting for: nothing (logged in) or the second step of the login. */
export type SessionStage = 'complete' | 'second-factor';

export interface Session {
  account: string;
  stage: SessionStage;
  /** Login time (ms); the absolute timeout counts from here. */
  created: number;
  /** Token every state-changing request must carry in X-CSRF-Token. */
  csrf: string;
}

export interface SessionTimeouts {
  idleMs: number;
  absoluteMs: number;
}

export const SESSION_COOKIE = '__Host-mailyard_session';
/** How both cookies are set: this site's pages only, never to script, never over plain HTTP. */
export const COOKIE_OPTIONS = { path: '/', httpOnly: true, secure: true, sameSite: 'strict' } as const;
/** Before login: the double-submit token that the login request must echo. */
export const LOGIN_COOKIE = '__Host-mailyard_login';

export const newToken = () => randomBytes(32).toString('base64url');

/** Constant-time comparison of two tokens. */
export function sameToken(a: string | undefined, b: string | undefined): boolean {
  if (!a || !b) return false;
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Sessions in Redis, so any instance serves any request. The cookie holds a random id;
 * Redis holds only its SHA-256 (`webmail:session:<hash>`), so whoever reads Redis cannot
 * take over a session. The key expires after the idle timeout and every request pushes
 * that back; the absolute timeout is checked against the login time.
 */
export class SessionStore {
  constructor(
    private readonly redis: Redis,
    private readonly timeouts: SessionTimeouts,
    private readonly now: () => number = Date.now,
  ) {}

  private key(id: string): string {
    return `webmail:session:${createHash('sha256').update(id).digest('base64url')}`;
  }

  /** The account's session keys (`webmail:sessions:<account>`), for signing out everywhere. */
  private async track(account: string, key: string): Promise<void> {
    const set = webmailSessionsKey(account);
    await this.redis.multi().sadd(set, key).pexpire(set, this.timeouts.absoluteMs).exec();
  }

  async create(account: string, stage: SessionStage): Promise<{ id: string; session: Session }> {
    const id = newToken();
    const session: Session = { account, stage, created: this.now(), csrf: newToken() };
    await this.redis.set(this.key(id), JSON.stringify(session), 'PX', this.timeouts.idleMs);
    await this.track(account, this.key(id));
    return { id, session };
  }

  /**
   * Ends every session of the account, on every instance (sign out everywhere), except
   * the one of cookie value `keep` when given (a password change); returns how many were live.
   */
  async destroyAll(account: string, keep?: string): Promise<number> {
    return endWebmailSessions(this.redis, account, keep ? this.key(keep) : undefined);
  }

  /** The live session for a cookie value, its idle time pushed back (unless `touch` is false); null if none. */
  async get(id: string | undefined, touch = true): Promise<Session | null> {
    if (!id || id.length > 100) return null;
    const key = this.key(id);
    const raw = touch ? await this.redis.getex(key, 'PX', this.timeouts.idleMs) : await this.redis.get(key);
    if (!raw) return null;
    const session = JSON.parse(raw) as Session;
    if (this.now() - session.created > this.timeouts.absoluteMs) {
      await this.redis.del(key);
      return null;
    }
    return session;
  }

  /**
   * The same login (its account and login time) under a new id and CSRF token, `session`
   * its new state; the old id ends. After the second step of the login, and after a
   * password change: an id or token someone saw before is then no good (OWASP: renew the
   * id whenever the privilege or the credentials change). Null when the old id had ended
   * meanwhile (a sign-out everywhere, an account locked while the request ran): it does
   * not come back under a new one.
   */
  async rotate(id: string, session: Session): Promise<{ id: string; session: Session } | null> {
    if (!(await this.redis.del(this.key(id)))) return null;
    const fresh = newToken();
    const renewed: Session = { ...session, csrf: newToken() };
    await this.redis.set(this.key(fresh), JSON.stringify(renewed), 'PX', this.timeouts.idleMs);
    await this.track(session.account, this.key(fresh));
    return { id: fresh, session: renewed };
  }

  async destroy(id: string | undefined): Promise<void> {
    if (id && id.length <= 100) await this.redis.del(this.key(id));
  }
}
