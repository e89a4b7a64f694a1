import type { Redis } from 'ioredis';
import type { AccountRecord } from '@mailyard/directory';
import type { AppPasswords } from './app-passwords.js';

/** The Redis pub/sub channel of revocations; channels are not prefixed by ioredis, so the key prefix is added here. */
export function revokedChannel(redis: Redis): string {
  return `${redis.options.keyPrefix ?? ''}auth:revoked`;
}

/**
 * Tells every instance that credentials of `account` changed (message: JSON {account,
 * name?}): with a name, one app password was revoked; without, anything may have
 * changed (a sign-out everywhere, a new password), and every session of the account is
 * checked against its stored record.
 */
export async function announceRevocation(redis: Redis, account: string, name?: string): Promise<void> {
  await redis.publish(revokedChannel(redis), revocationMessage(account, name));
}

/** What announceRevocation publishes, for a MULTI that announces with the change itself. */
export const revocationMessage = (account: string, name?: string): string =>
  JSON.stringify({ account: account.toLowerCase(), ...(name !== undefined ? { name } : {}) });

/** The set of an account's webmail session keys (the webmail's SessionStore keeps it). */
export const webmailSessionsKey = (account: string) => `webmail:sessions:${account}`;

/** How a webmail session's key begins (`webmail:session:<SHA-256 of the cookie>`). */
export const WEBMAIL_SESSION_KEY = 'webmail:session:';

/**
 * A member of the account's set as a key to hand the client: members are keys as the
 * client names them, before its key prefix; a renewal by a Lua script used to add the
 * renewed key with the prefix, and such a member (it lives as long as its session, days)
 * is taken back to the client's name, or the client would prefix it twice and miss it.
 */
function sessionKeyOf(redis: Redis, member: string): string {
  const prefix = redis.options.keyPrefix ?? '';
  return prefix && member.startsWith(prefix + WEBMAIL_SESSION_KEY) ? member.slice(prefix.length) : member;
}

/**
 * The account record's field counting the times all its webmail sessions were ended at
 * once (a sign-out everywhere, a new password, two-factor turned on, a lock). A webmail
 * session carries the value it had when its login was checked and is refused once the
 * account's is higher, so that a session renewed or logged in while they were being ended
 * does not outlive them. The webmail's own count, apart from SIGN_OUT_FIELD: a new
 * password ends every other webmail session, but not the IMAP sessions of app passwords,
 * which that count would end.
 */
export const WEBMAIL_SIGN_OUT_FIELD = 'websignout';

/**
 * Raises the webmail count of an existing account: [before, after], or nil when there is
 * no account. Runs when Redis is at its maxmemory (allow-oom): one counter field of the
 * account's record, and what it does is end sessions, which must not wait for room.
 */
const RAISE_WEBMAIL_SIGN_OUT = `#!lua flags=allow-oom
if redis.call('HEXISTS', KEYS[1], 'password') == 0 then return false end
local before = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
return {before, redis.call('HINCRBY', KEYS[1], ARGV[1], 1)}
`;

/**
 * Raises the account's webmail count (WEBMAIL_SIGN_OUT_FIELD): every webmail session of
 * the account that logged in before is refused from now on. The count before and after;
 * null when there is no such account (its sessions are refused anyway).
 */
export async function raiseWebmailSignOut(
  redis: Redis,
  account: string,
): Promise<{ before: number; after: number } | null> {
  const res = (await redis.eval(
    RAISE_WEBMAIL_SIGN_OUT,
    1,
    `account:${account.toLowerCase()}`,
    WEBMAIL_SIGN_OUT_FIELD,
  )) as [string, number] | null;
  return res && { before: Number(res[0]), after: Number(res[1]) };
}

/**
 * Deletes the account's webmail session keys, but `keep` (a session key): the session
 * that changed the password goes on under it. Returns how many were live. Alone, it only
 * tidies: what ends the sessions is the count raiseWebmailSignOut raised before.
 */
export async function deleteWebmailSessions(redis: Redis, account: string, keep?: string): Promise<number> {
  const set = webmailSessionsKey(account);
  const members = (await redis.smembers(set)).filter((m) => sessionKeyOf(redis, m) !== keep);
  const ended = members.length ? await redis.del(...members.map((m) => sessionKeyOf(redis, m))) : 0;
  if (keep) {
    if (members.length) await redis.srem(set, ...members);
  } else await redis.del(set);
  return ended;
}

/**
 * Ends every webmail session of the account, on every instance: its count goes up first,
 * so that a session renewed (or a login checked) while the keys go is refused all the
 * same; then the keys go. Returns how many were live.
 */
export async function endWebmailSessions(redis: Redis, account: string): Promise<number> {
  await raiseWebmailSignOut(redis, account);
  return deleteWebmailSessions(redis, account);
}

/** The account record's field counting sign-outs everywhere (every session older than its value ends). */
export const SIGN_OUT_FIELD = 'signout';

/**
 * Raises the sign-out count of an existing account (HINCRBY alone would make a hash
 * without a password); nil when there is none. At maxmemory too, as RAISE_WEBMAIL_SIGN_OUT.
 */
const RAISE_SIGN_OUT = `#!lua flags=allow-oom
if redis.call('HEXISTS', KEYS[1], 'password') == 0 then return false end
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)`;

/**
 * Ends every session of the account on every protocol and instance (IMAP, POP3,
 * submission; the webmail ends its own): the account's sign-out count goes up, and each
 * session logged in under the previous count ends. False when there is no such account.
 */
export async function signOutEverywhere(redis: Redis, account: string): Promise<boolean> {
  const a = account.toLowerCase();
  const bumped = (await redis.eval(RAISE_SIGN_OUT, 1, `account:${a}`, SIGN_OUT_FIELD)) as number | null;
  if (bumped === null) return false;
  await announceRevocation(redis, a);
  return true;
}

/** The app password a session logged in with: its name and stored record (as AppPasswords.records gives it). */
export interface AppPasswordCredential {
  name: string;
  record: string;
}

/**
 * What a session logged in with, as stored when it did, so that a change ends it: the
 * account's sign-out count, and the password hash (a password login) or the app
 * password's record (an app password login). A service acting for the user (the
 * webmail) has neither: only a sign-out everywhere (or the account's removal) ends it.
 */
export interface SessionCredential {
  signOut: string;
  password?: string;
  appPassword?: AppPasswordCredential;
}

/** The credential of a login checked against `record`, the account as read during the check. */
export function sessionCredential(
  record: AccountRecord,
  via: 'password' | 'app-password' | 'service',
  appPassword?: AppPasswordCredential,
): SessionCredential {
  const signOut = record[SIGN_OUT_FIELD] ?? '0';
  if (via === 'password') return { signOut, password: record.password };
  if (via === 'app-password' && appPassword) return { signOut, appPassword };
  return { signOut };
}

/** How long after a check that could not be made (Redis failing) it is made again. */
const RECHECK_MS = 2000;

/** Why a watched session ends: its protocol says it in its own words. */
export type EndReason =
  'app-password-revoked' | 'signed-out' | 'password-changed' | 'two-factor-on' | 'account-gone';

interface Watch {
  credential: SessionCredential;
  onEnded: (reason: EndReason) => void;
}

/**
 * Ends sessions whose credential is no longer good, within moments, on every instance:
 * each service subscribes to the revocation channel and calls back the sessions of the
 * account named (IMAP, IDLE included, POP3, SMTP submission), which close. A session
 * ends when the app password it logged in with is revoked, when the password it logged
 * in with was changed or two-factor login is turned on (the password then opens no
 * session of these protocols), when the account signs out everywhere, or when the
 * account is gone.
 *
 * An announcement only names the account (and the app password, when one was revoked);
 * the stored records are read again before a session is ended, so a session that logged
 * in with a new app password of the same name, or after the sign-out, is left alone.
 * Announcements missed while the subscription was down are made up for by checking
 * every watched session again at each (re)subscription, and a session is checked once
 * as soon as it is watched, so a change between its login and its watch is not missed
 * either. When the check cannot be made (Redis failing) the sessions stay: they logged
 * in, and the account's sessions are checked again every RECHECK_MS until it can be
 * made (the subscription may never have dropped, so nothing else would check them). A
 * new login with a revoked or changed credential is refused by the authenticator
 * itself, cache included.
 */
export class CredentialRevocations {
  private readonly watched = new Map<string, Set<Watch>>();
  /** Accounts whose check failed, with the timer of the next one. */
  private readonly rechecks = new Map<string, NodeJS.Timeout>();
  /** Accounts whose checks fail since the failure told of (once, not at every recheck). */
  private readonly failing = new Set<string>();
  private sub: Redis | null = null;

  constructor(
    private readonly redis: Redis,
    private readonly appPasswords: AppPasswords,
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {}

  /** Subscribes (and subscribes again after every reconnection). */
  start(): void {
    if (this.sub) return;
    const sub = this.redis.duplicate({
      keyPrefix: '',
      lazyConnect: false,
      enableAutoPipelining: false,
      autoResubscribe: false,
    });
    this.sub = sub;
    sub.on('message', (_channel: string, message: string) => {
      let m: { account?: unknown; name?: unknown };
      try {
        m = JSON.parse(message) as typeof m;
      } catch {
        return;
      }
      if (typeof m.account === 'string') void this.verify(m.account, m.name);
    });
    sub.on('ready', () => {
      sub.subscribe(revokedChannel(this.redis)).then(
        () => {
          for (const account of this.watched.keys()) void this.verify(account);
        },
        (err: unknown) => this.onError(err),
      );
    });
    sub.on('error', () => undefined);
  }

  close(): void {
    this.sub?.disconnect();
    this.sub = null;
    this.watched.clear();
    for (const timer of this.rechecks.values()) clearTimeout(timer);
    this.rechecks.clear();
    this.failing.clear();
  }

  /** Calls `onEnded` once the credential this session logged in with no longer holds; returns the unwatch function. */
  watch(account: string, credential: SessionCredential, onEnded: (reason: EndReason) => void): () => void {
    const a = account.toLowerCase();
    let set = this.watched.get(a);
    if (!set) this.watched.set(a, (set = new Set()));
    const w: Watch = { credential, onEnded };
    set.add(w);
    void this.verify(a);
    return () => this.unwatch(a, w);
  }

  private unwatch(account: string, w: Watch): void {
    const set = this.watched.get(account);
    if (!set) return;
    set.delete(w);
    if (!set.size) this.watched.delete(account);
  }

  /**
   * Ends the watched sessions of `account` whose credential changed. With `name` (one app
   * password revoked), only the sessions of that app password are looked at.
   */
  private async verify(account: string, name?: unknown): Promise<void> {
    const set = this.watched.get(account);
    if (!set?.size) {
      this.failing.delete(account);
      return;
    }
    const concerned = [...set].filter((w) => name === undefined || w.credential.appPassword?.name === name);
    if (!concerned.length) return;
    let record: Record<string, string>;
    let apps: Record<string, string> = {};
    try {
      const needApps = concerned.some((w) => w.credential.appPassword);
      [record, apps] = await Promise.all([
        this.redis.hgetall(`account:${account}`),
        needApps ? this.appPasswords.records(account) : Promise.resolve({}),
      ]);
    } catch (err) {
      // once per account and outage: a recheck every RECHECK_MS of every account with a
      // session would flood the log while Redis fails
      if (!this.failing.has(account)) this.onError(err);
      this.failing.add(account);
      // every session of the account: a later announcement may be missed the same way
      if (!this.rechecks.has(account))
        this.rechecks.set(
          account,
          setTimeout(() => {
            this.rechecks.delete(account);
            void this.verify(account);
          }, RECHECK_MS).unref(),
        );
      return;
    }
    this.failing.delete(account);
    for (const w of concerned) {
      const reason = endReason(w.credential, record, apps);
      if (!reason) continue;
      this.unwatch(account, w);
      w.onEnded(reason);
    }
  }
}

function endReason(
  c: SessionCredential,
  record: Record<string, string>,
  apps: Record<string, string>,
): EndReason | null {
  if (!record.password) return 'account-gone';
  if ((record[SIGN_OUT_FIELD] ?? '0') !== c.signOut) return 'signed-out';
  if (c.password !== undefined && record.password !== c.password) return 'password-changed';
  // with two-factor on, the password logs in to no protocol session (only the webmail, with
  // its second step, which is not watched): a session opened with it before must not go on
  if (c.password !== undefined && record.totp) return 'two-factor-on';
  if (c.appPassword && apps[c.appPassword.name] !== c.appPassword.record) return 'app-password-revoked';
  return null;
}

/** The sentence a protocol ends a session with (after its own code: BYE [EXPIRED], -ERR [AUTH], 421 4.7.0). */
export function endedText(why: EndReason): string {
  switch (why) {
    case 'app-password-revoked':
      return 'The app password of this session was revoked';
    case 'signed-out':
      return 'Signed out everywhere by the account owner';
    case 'password-changed':
      return 'The password of this account was changed';
    case 'two-factor-on':
      return 'Two-factor login was turned on: log in with an app password';
    case 'account-gone':
      return 'This account no longer exists';
  }
}
