import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import {
  WEBMAIL_SESSION_KEY,
  WEBMAIL_SIGN_OUT_FIELD,
  deleteWebmailSessions,
  endWebmailSessions,
  webmailSessionsKey,
} from '@mailyard/auth';

/** What a session is waiting for: nothing (logged in) or the second step of the login. */
export type SessionStage = 'complete' | 'second-factor';

export interface Session {
  account: string;
  stage: SessionStage;
  /** Login time (ms); the absolute timeout counts from here. */
  created: number;
  /** Token every state-changing request must carry in X-CSRF-Token. */
  csrf: string;
  /**
   * The account's webmail sign-out count (WEBMAIL_SIGN_OUT_FIELD) when the login was
   * checked: once the account's is higher, the session has ended. Sessions made before it
   * was kept have none and count as 0, as does every account until its sessions are first
   * ended: they go on until then, as they did.
   */
  signOut: number;
  /**
   * The account's creation time (`created` in its record) when the login was checked: an
   * account of the same address deleted and made again since is another account, and the
   * session has ended. Sessions made before it was kept have none and are not compared.
   */
  accountCreated?: string;
  /**
   * Set on the old id of a session renewed by endOthers (a new password, two-factor turned
   * on), for the few seconds its key outlives that: the client address that asked for the
   * change, the only one it still serves.
   */
  retiredFor?: string;
  /**
   * The other id of a session renewed by endOthers, while the old one may still be in its
   * grace (each its key as the client names it): on the new id the old one's
   * (`renewedFrom`), on the old id the new one's (`renewedAs`). A logout, or a new login
   * of the browser, by either ends both: no id of that browser's login outlives it.
   */
  renewedFrom?: string;
  renewedAs?: string;
}

/** What a login reads of its account before its password is checked, and its session keeps. */
export type LoginStamp = Pick<Session, 'signOut' | 'accountCreated'>;

export interface SessionTimeouts {
  idleMs: number;
  absoluteMs: number;
  /**
   * How long the old id of a session renewed by endOthers still serves its client's address:
   * requests that left before the answer with the new cookie came (the same tab's, another
   * tab's of the same browser) are not refused as a session that ended. 0 (unset): not at all.
   */
  renewalGraceMs?: number;
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
 * Ends a session (KEYS[1]) and the other id of its renewal, either way (renewedFrom,
 * renewedAs: keys as the client names them, ARGV[1] the key prefix): the old id of a
 * session renewed by a new password, in its grace, or the new id of an old one. An old
 * id sent from an address (ARGV[2]) other than its client's is no session of that sender:
 * it is left as it is, and so is the renewed one. A single Redis, as the platform runs,
 * not a cluster.
 */
const DESTROY = `
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, s = pcall(cjson.decode, raw)
if ok and type(s) == 'table' and ARGV[2] ~= '' and type(s.retiredFor) == 'string'
  and s.retiredFor ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
if not ok or type(s) ~= 'table' then return 1 end
if type(s.renewedFrom) == 'string' then redis.call('DEL', ARGV[1] .. s.renewedFrom) end
if type(s.renewedAs) == 'string' then redis.call('DEL', ARGV[1] .. s.renewedAs) end
return 1
`;

/**
 * A session (KEYS[1]; its idle time pushed back to ARGV[1] ms unless that is empty, or it is
 * a renewed session's old id, whose few seconds are never pushed back) and its account's
 * webmail sign-out count and creation time, in one round trip: {session} when the account
 * is gone, {session, count, created} else, nil when there is no session. The account's key
 * is made here from the session (ARGV[2] the key prefix, ARGV[3] the field): a single
 * Redis, as the platform runs, not a cluster.
 */
const LOOKUP = `
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local ok, s = pcall(cjson.decode, raw)
if not ok or type(s) ~= 'table' or type(s.account) ~= 'string' then return {raw} end
if ARGV[1] ~= '' and s.retiredFor == nil then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local account = ARGV[2] .. 'account:' .. s.account
if redis.call('HEXISTS', account, 'password') == 0 then return {raw} end
return {raw, redis.call('HGET', account, ARGV[3]) or '0', redis.call('HGET', account, 'created') or ''}
`;

/** Whether the account of the address (made at `created`) is not the one `session` logged in to. */
const otherAccount = (session: Session, created: string) =>
  session.accountCreated !== undefined && session.accountCreated !== created;

/**
 * Raises the account's webmail sign-out count (KEYS[1], ARGV[1] the field) and renews the
 * session that did it (KEYS[2] to KEYS[3], tracked in KEYS[4]) with the new count, in one
 * step: a request of that session arriving between the two would be compared against the
 * raised count, and the session would end itself. ARGV[2]: the session's count; ARGV[3]:
 * the renewed session's JSON, but its count; ARGV[4], ARGV[5]: idle and absolute timeouts
 * (ms). The old id takes the new count too, for ARGV[6] ms (the grace; 0: it goes now;
 * an old id renewed again in its grace keeps what is left of it, no more), serving only
 * the address ARGV[7]; it is no longer tracked, so that the ending of the others
 * leaves it. KEYS[4] holds keys as the client names them, without its key prefix (the
 * client adds it when it deletes them): ARGV[8] and ARGV[9] are the old and the renewed
 * key so named; the old one may also be there as KEYS[2], prefixed, as this script once
 * added a renewed key. The old id keeps the renewed key (renewedAs), as the renewed
 * session (ARGV[3]) keeps the old one (renewedFrom): a logout by either ends both. The
 * new count, or nil when the session ended (its key gone, an ending came first, or the
 * account is gone); the count goes up all the same when the account is there. Runs when
 * Redis is at its maxmemory (allow-oom): a new password, which ends the other sessions,
 * must not wait for room, and this one's new id replaces its old one (whose grace is
 * seconds), no more.
 */
const RAISE_AND_RENEW = `#!lua flags=allow-oom
if redis.call('HEXISTS', KEYS[1], 'password') == 0 then return false end
local before = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local after = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if before > tonumber(ARGV[2]) then return false end
local old = redis.call('GET', KEYS[2])
if not old then return false end
local s = cjson.decode(ARGV[3])
s.signOut = after
redis.call('SET', KEYS[3], cjson.encode(s), 'PX', ARGV[4])
redis.call('SADD', KEYS[4], ARGV[9])
redis.call('PEXPIRE', KEYS[4], ARGV[5])
redis.call('SREM', KEYS[4], ARGV[8], KEYS[2])
if tonumber(ARGV[6]) > 0 then
  local o = cjson.decode(old)
  local grace = tonumber(ARGV[6])
  -- an old id in its grace renewed again keeps what was left of it, never a new one
  if o.retiredFor ~= nil then
    local left = redis.call('PTTL', KEYS[2])
    if left > 0 and left < grace then grace = left end
  end
  o.signOut = after
  o.retiredFor = ARGV[7]
  o.renewedAs = ARGV[9]
  redis.call('SET', KEYS[2], cjson.encode(o), 'PX', grace)
else
  redis.call('DEL', KEYS[2])
end
return after
`;

type LookupRedis = Redis & {
  webmailSession(key: string, idleMs: string, prefix: string, field: string): Promise<string[] | null>;
};

/**
 * Sessions in Redis, so any instance serves any request. The cookie holds a random id;
 * Redis holds only its SHA-256 (`webmail:session:<hash>`), so whoever reads Redis cannot
 * take over a session. The key expires after the idle timeout and every request pushes
 * that back; the absolute timeout is checked against the login time.
 *
 * Ending all of an account's sessions (a sign-out everywhere, a new password, two-factor
 * turned on, a lock, the account deleted) raises its webmail sign-out count before their
 * keys go, and each request reads the count with the session: a session whose login was
 * checked before is refused even when its key outlived the ending (a renewal that wrote
 * its new id meanwhile, a login checked just before), as the protocol sessions are by
 * their sign-out count (CredentialRevocations).
 */
export class SessionStore {
  private readonly redis: LookupRedis;

  constructor(
    redis: Redis,
    private readonly timeouts: SessionTimeouts,
    private readonly now: () => number = Date.now,
  ) {
    this.redis = redis as LookupRedis;
    if (typeof this.redis.webmailSession !== 'function')
      redis.defineCommand('webmailSession', { numberOfKeys: 1, lua: LOOKUP });
  }

  private key(id: string): string {
    return `${WEBMAIL_SESSION_KEY}${createHash('sha256').update(id).digest('base64url')}`;
  }

  /** The account's session keys (`webmail:sessions:<account>`), for signing out everywhere. */
  private async track(account: string, key: string): Promise<void> {
    const set = webmailSessionsKey(account);
    await this.redis.multi().sadd(set, key).pexpire(set, this.timeouts.absoluteMs).exec();
  }

  /**
   * The account's webmail sign-out count and creation time, for a login: read before its
   * password is checked, so that an ending of its sessions, or the account deleted and
   * made again, while the check runs ends this one too.
   */
  async loginStamp(account: string): Promise<LoginStamp> {
    const [count, created] = await this.redis.hmget(
      `account:${account.toLowerCase()}`,
      WEBMAIL_SIGN_OUT_FIELD,
      'created',
    );
    return { signOut: Number(count ?? 0), accountCreated: created ?? '' };
  }

  /** A new session of a login checked while its account was as `stamp` says. */
  async create(
    account: string,
    stage: SessionStage,
    stamp: LoginStamp,
  ): Promise<{ id: string; session: Session }> {
    const id = newToken();
    const session: Session = { account, stage, created: this.now(), csrf: newToken(), ...stamp };
    await this.redis.set(this.key(id), JSON.stringify(session), 'PX', this.timeouts.idleMs);
    await this.track(account, this.key(id));
    return { id, session };
  }

  /** Ends every session of the account, on every instance (sign out everywhere); returns how many were live. */
  async destroyAll(account: string): Promise<number> {
    return endWebmailSessions(this.redis, account);
  }

  /**
   * The live session for a cookie value sent from `ip`, its idle time pushed back (unless
   * `touch` is false); null if none.
   */
  async get(id: string | undefined, ip?: string, touch = true): Promise<Session | null> {
    const found = await this.find(id, ip, touch);
    return found === 'ended' ? null : found;
  }

  /**
   * As get, but 'ended' for a session its account ended (signed out everywhere, a new
   * password...) whose key outlived that, or whose account is gone: the key goes now. A
   * renewed session's old id, in its grace, is 'ended' to any address but its client's.
   */
  async find(id: string | undefined, ip?: string, touch = true): Promise<Session | 'ended' | null> {
    if (!id || id.length > 100) return null;
    const key = this.key(id);
    const res = await this.redis.webmailSession(
      key,
      touch ? String(this.timeouts.idleMs) : '',
      this.redis.options.keyPrefix ?? '',
      WEBMAIL_SIGN_OUT_FIELD,
    );
    if (!res) return null;
    const [raw, count, created] = res;
    // a session made before the count was kept has none: 0, as the account's until its first ending
    const stored = JSON.parse(raw!) as Omit<Session, 'signOut'> & { signOut?: number };
    const session: Session = { ...stored, signOut: stored.signOut ?? 0 };
    if (count === undefined || Number(count) > session.signOut || otherAccount(session, created!)) {
      await this.redis.del(key);
      return 'ended';
    }
    if (this.now() - session.created > this.timeouts.absoluteMs) {
      await this.redis.del(key);
      return null;
    }
    // a copy of the old cookie elsewhere (perhaps the reason for the new password) is out
    if (session.retiredFor !== undefined && session.retiredFor !== ip) return 'ended';
    return session;
  }

  /** Whether the account ended its sessions since `session` logged in (or is gone, or made again). */
  private async endedSince(session: Session): Promise<boolean> {
    const [password, count, created] = await this.redis.hmget(
      `account:${session.account.toLowerCase()}`,
      'password',
      WEBMAIL_SIGN_OUT_FIELD,
      'created',
    );
    return !password || Number(count ?? 0) > session.signOut || otherAccount(session, created ?? '');
  }

  /**
   * The same login (its account, login time and sign-out count) under a new id and CSRF
   * token, `session` its new state; the old id ends. After the second step of the login:
   * an id or token someone saw before is then no good (OWASP: renew the id whenever the
   * privilege or the credentials change). Null when the session ended meanwhile (a
   * sign-out everywhere, a new password, an account locked while the request ran): it
   * does not come back under a new id. An ending that comes after this answer is caught
   * by the count, at the next request.
   */
  async rotate(id: string, session: Session): Promise<{ id: string; session: Session } | null> {
    if (!(await this.redis.del(this.key(id)))) return null;
    const fresh = newToken();
    const renewed: Session = { ...session, csrf: newToken() };
    await this.redis.set(this.key(fresh), JSON.stringify(renewed), 'PX', this.timeouts.idleMs);
    await this.track(session.account, this.key(fresh));
    // ended between the read of the session and the write of its new id: the ending may
    // have looked for its keys before the new one was there
    if (await this.endedSince(renewed)) {
      await this.redis.del(this.key(fresh));
      return null;
    }
    return { id: fresh, session: renewed };
  }

  /**
   * After a new password or two-factor turned on: every other session of the account
   * ends, on every instance, and this one goes on under a new id and CSRF token (whoever
   * holds a copy of the old cookie elsewhere, perhaps the reason for the change, is out).
   * The old id serves `ip`, the client's address, for renewalGraceMs more: a request this
   * browser sent before the answer came is not taken for one of a session that ended. The
   * account's count goes up, and this session takes the new one, unless an ending came
   * first (then it has ended too, and `fresh` is null). `ended`: how many others were live.
   */
  async endOthers(
    id: string,
    session: Session,
    ip = '',
  ): Promise<{ fresh: { id: string; session: Session } | null; ended: number }> {
    const freshId = newToken();
    const { signOut, retiredFor: _, renewedFrom: _from, renewedAs: _as, ...login } = session;
    // the old id's key, which a logout of the renewed session ends too, in its grace
    const renewed = { ...login, csrf: newToken(), renewedFrom: this.key(id) };
    const after = (await this.redis.eval(
      RAISE_AND_RENEW,
      4,
      `account:${session.account.toLowerCase()}`,
      this.key(id),
      this.key(freshId),
      webmailSessionsKey(session.account),
      WEBMAIL_SIGN_OUT_FIELD,
      String(signOut),
      JSON.stringify(renewed),
      String(this.timeouts.idleMs),
      String(this.timeouts.absoluteMs),
      String(ip ? (this.timeouts.renewalGraceMs ?? 0) : 0),
      ip,
      this.key(id),
      this.key(freshId),
    )) as number | null;
    const fresh = after === null ? null : { id: freshId, session: { ...renewed, signOut: after } };
    if (!fresh) await this.destroy(id);
    const ended = await deleteWebmailSessions(
      this.redis,
      session.account,
      fresh ? this.key(fresh.id) : undefined,
    );
    return { fresh, ended };
  }

  /**
   * Ends the session of `id` (a logout, a new login of the browser), and the other id of
   * its renewal by a new password: the old one, still in its grace, or the new one. Sent
   * from `ip` (a login, whose cookie nothing checked), a renewed session's old id from
   * another address than its client's ends nothing: a copy of it elsewhere does not log
   * the user out.
   */
  async destroy(id: string | undefined, ip = ''): Promise<void> {
    if (id && id.length <= 100)
      await this.redis.eval(DESTROY, 1, this.key(id), this.redis.options.keyPrefix ?? '', ip);
  }
}
