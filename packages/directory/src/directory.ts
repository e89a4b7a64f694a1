import type { ChainableCommander, Redis } from 'ioredis';
import { normalizeDomain, parseMailAddress, plural, splitPlus } from '@mailyard/smtp-core';
import { hashPassword, passwordWeakness, verifyPassword } from './passwords.js';

/** A directory operation refused for a reason the operator can fix; the message is one sentence. */
export class DirectoryError extends Error {
  override readonly name = 'DirectoryError';
  constructor(
    readonly code:
      'unknown_domain' | 'duplicate' | 'invalid_address' | 'weak_password' | 'not_found' | 'in_use',
    message: string,
  ) {
    super(message);
  }
}

/**
 * Redis did not answer a read (down, timed out, refused the command). Never an answer
 * such as "not local" or "no such user": SMTP says 451 4.3.0, delivery holds the
 * message, a login is refused as temporarily unavailable.
 */
export class DirectoryUnavailableError extends Error {
  override readonly name = 'DirectoryUnavailableError';
  constructor(cause: unknown) {
    super(`directory unavailable: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/**
 * An address as the directory stores an account under it: the local part lower-cased,
 * the domain in lower-case ASCII (`Jürgen@Bücher.test` is `jürgen@xn--bcher-kva.test`);
 * null when it is not an address an account can have (invalid, or an address literal).
 */
export function accountAddress(address: string): string | null {
  const p = parseMailAddress(address);
  if (!p.ok || p.value.domain.startsWith('[')) return null;
  return `${p.value.local.toLowerCase()}@${p.value.domain}`;
}

/** A Redis read whose failure is a DirectoryUnavailableError. */
function read<T>(p: Promise<T>): Promise<T> {
  return p.catch((err: unknown) => {
    throw new DirectoryUnavailableError(err);
  });
}

/**
 * The answers of a pipeline. ioredis reports a failed command inside the results, not
 * by rejecting: one that failed must not read as an empty set or a missing key.
 */
async function answers(pipe: ChainableCommander): Promise<unknown[]> {
  const res = await read(pipe.exec());
  if (!res) throw new DirectoryUnavailableError(new Error('pipeline discarded'));
  return res.map(([err, value]) => {
    if (err) throw new DirectoryUnavailableError(err);
    return value;
  });
}

/** The Redis hash `account:<address>`: every field, so any change to the account shows. */
export type AccountRecord = Record<string, string> & { password: string };

export type RecipientMatch =
  | { kind: 'account'; account: string }
  | { kind: 'alias'; source: string; targets: string[] }
  | { kind: 'catchall'; source: string; targets: string[] };

export interface Expansion {
  /** Accounts to file a copy for, each with the address that led to it (for Delivered-To). */
  local: { account: string; via: string }[];
  /** External addresses that aliases point to (routed to `outbound`). */
  remote: string[];
}

/** How deep alias chains may nest (Postfix: virtual_alias_recursion_limit); a loop ends before. */
export const ALIAS_RECURSION_LIMIT = 100;

/** Addresses one recipient may expand to by default (Postfix's virtual_alias_expansion_limit). */
export const DEFAULT_ALIAS_EXPANSION_LIMIT = 1000;

/**
 * A recipient whose aliases expand to more addresses than the limit, or nest deeper than
 * ALIAS_RECURSION_LIMIT: a fault of the directory the operator must fix, not an answer.
 * Postfix's cleanup defers such a recipient ("4.6.0 Alias expansion error"); so does
 * delivery, rather than deliver a part of the expansion.
 */
export class AliasExpansionError extends Error {
  override readonly name = 'AliasExpansionError';
  constructor(
    readonly recipient: string,
    readonly exceeded: { kind: 'size'; reached: number; limit: number } | { kind: 'nesting'; limit: number },
  ) {
    super(
      exceeded.kind === 'size'
        ? `alias expansion of ${recipient} reached ${exceeded.reached} addresses, over the limit of ${exceeded.limit}`
        : `alias expansion of ${recipient} nests deeper than ${exceeded.limit} levels`,
    );
  }
}

/**
 * The SET of local domains (ASCII, lower case). Other stores that keep something for a
 * domain check it in the script that stores it, so that nothing is stored for a domain
 * deleted meanwhile (the DKIM keys). Renaming it is a migration.
 */
export const LOCAL_DOMAINS_KEY = 'domains';

// KEYS: domains, account:<a>, accounts:<d>; ARGV: d, password hash, created, a, role
// ('' for none). The domain is checked in the step that creates the account: a deletion
// of the domain (which counts its accounts in one step too) either sees the account and
// is refused, or comes first and the account is refused; no account is left in a domain
// that is gone. The role is given in the same step: no account is left without it.
const ADD_ACCOUNT = `
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], 'password', ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'created', ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'role', ARGV[5]) end
redis.call('SADD', KEYS[3], ARGV[4])
return 1`;

// KEYS: account:<a>; ARGV: how (set, setnx or del), field, value. A field of an account
// is written only while the account is there (its record has a password), in the step
// that checks it: a deletion in between would otherwise leave a record of that one field,
// an account that exists without a password. -1: no such account.
const UPDATE_ACCOUNT = `
if redis.call('HEXISTS', KEYS[1], 'password') == 0 then return -1 end
if ARGV[1] == 'set' then return redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
if ARGV[1] == 'setnx' then return redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3]) end
return redis.call('HDEL', KEYS[1], ARGV[2])`;
// The same, run when Redis is at its maxmemory (allow-oom), for what shuts someone out of an
// account: a new password (a hash replacing one of its size) and a lock (one short field).
// Refused for want of room, as a plain write is at maxmemory, the owner or an administrator
// who acts because the account is in the wrong hands could not act until there was room.
const SHUT_OUT = `#!lua flags=allow-oom${UPDATE_ACCOUNT}`;

// KEYS: account:<a>, accounts:<d>, then the keys that go with the account. A script, not a
// MULTI: Redis at its maxmemory refuses every command queued in a MULTI, deletions too.
const DEL_ACCOUNT = `
redis.call('DEL', KEYS[1], unpack(KEYS, 3))
return redis.call('SREM', KEYS[2], ARGV[1])`;

// KEYS: alias:<source>, aliases:<d>; ARGV: source. Whether the alias was there. A script,
// not a MULTI, as DEL_ACCOUNT: an alias found forwarding where it must not is removed while
// Redis is at its maxmemory too.
const DEL_ALIAS = `
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return n`;

// KEYS: domains, alias:<source>, aliases:<d>; ARGV: d, source, targets... The alias's
// targets after the change, or -1 when the domain is not (or no longer) local.
const ADD_ALIAS = `
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return -1 end
for i = 3, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
redis.call('SADD', KEYS[3], ARGV[2])
return redis.call('SMEMBERS', KEYS[2])`;

// KEYS: domains, accounts:<d>, aliases:<d>, then the keys to delete with the domain, then
// the sets to take it out of; ARGV: d, the number of keys to delete. {-1, 0}: not a
// local domain; {accounts, aliases}: refused, it still has them; {0, 0}: deleted.
const DEL_DOMAIN = `
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return {-1, 0} end
local accounts = redis.call('SCARD', KEYS[2])
local aliases = redis.call('SCARD', KEYS[3])
if accounts + aliases > 0 then return {accounts, aliases} end
redis.call('SREM', KEYS[1], ARGV[1])
local n = tonumber(ARGV[2])
for i = 4, 3 + n do redis.call('DEL', KEYS[i]) end
for i = 4 + n, #KEYS do redis.call('SREM', KEYS[i], ARGV[1]) end
return {0, 0}`;

/** What other packages keep for a domain, deleted in the step that deletes the domain. */
export interface DomainKeys {
  /** Keys to delete (the domain's DKIM keys). */
  keys: readonly string[];
  /** Sets that list the domain, to take it out of. */
  sets: readonly string[];
}

// Redis layout (every key under the configured prefix):
//   domains                  SET   local domains (ASCII, lower case): LOCAL_DOMAINS_KEY
//   account:<address>        HASH  password (argon2id), created, role (`admin` or absent),
//                                  locked (ISO time of the lock, absent when not locked)
//   accounts:<domain>        SET   account addresses of a domain
//   alias:<source>           SET   targets; source `@domain` is the catch-all
//   aliases:<domain>         SET   alias sources of a domain
//   directory:changed        pub/sub channel (prefixed by hand), announced on every change
export class Directory {
  private readonly cache: LookupCache | null;
  private readonly expansionLimit: number;

  /**
   * `cacheTtlMs` > 0 keeps recipient lookups in process for that long, as Postfix's
   * proxymap or Dovecot's auth cache do; every change made through this class is
   * announced on a Redis channel and empties the cache of every instance at once, so
   * the TTL only bounds staleness when that announcement is missed.
   * `aliasExpansionLimit`: the addresses `expand` lets one recipient expand to.
   */
  constructor(
    private readonly redis: Redis,
    private readonly recipientDelimiter = '+',
    opts: { cacheTtlMs?: number; cacheMaxEntries?: number; aliasExpansionLimit?: number } = {},
  ) {
    this.cache = opts.cacheTtlMs
      ? new LookupCache(redis, opts.cacheTtlMs, opts.cacheMaxEntries ?? 50_000)
      : null;
    this.expansionLimit = opts.aliasExpansionLimit ?? DEFAULT_ALIAS_EXPANSION_LIMIT;
  }

  /** Stops listening for change announcements (only started when the cache is on). */
  close(): void {
    this.cache?.close();
  }

  /** Tells every instance's lookup cache that the directory changed. */
  private changed(): Promise<void> {
    return this.announceChange();
  }

  /**
   * Tells every instance's lookup cache that the directory changed, for a change made
   * behind this class (a restore writes the keys themselves).
   */
  async announceChange(): Promise<void> {
    this.cache?.clear();
    await this.redis.publish(changedChannel(this.redis), String(Date.now()));
  }

  // ---- domains
  async addDomain(domain: string): Promise<string> {
    const d = normalizeDomain(domain);
    if (!d) throw new DirectoryError('invalid_address', `"${domain}" is not a valid domain name`);
    if (!(await this.redis.sadd(LOCAL_DOMAINS_KEY, d)))
      throw new DirectoryError('duplicate', `domain ${d} already exists`);
    await this.changed();
    return d;
  }
  async listDomains(): Promise<string[]> {
    return (await read(this.redis.smembers(LOCAL_DOMAINS_KEY))).sort();
  }
  /** Whether we are final destination for `domain`; cached with the recipient lookups. */
  async isLocalDomain(domain: string): Promise<boolean> {
    const d = domain.toLowerCase();
    const hit = this.cachedLocalDomain(d);
    if (hit !== undefined) return hit;
    const generation = this.cache?.generation ?? 0;
    const local = (await read(this.redis.sismember(LOCAL_DOMAINS_KEY, d))) === 1;
    this.cache?.set(`domain:${d}`, local, generation);
    return local;
  }
  /** isLocalDomain's answer when the lookup cache holds it, without Redis; else undefined. */
  cachedLocalDomain(domain: string): boolean | undefined {
    const hit = this.cache?.get(`domain:${domain.toLowerCase()}`);
    return typeof hit === 'boolean' ? hit : undefined;
  }
  /**
   * Deletes a domain that has no accounts or aliases left and, in the same step, `also`:
   * what other packages keep for it (its DKIM keys), so that nothing of it is left for a
   * domain of the same name added later. The check and the deletion are one step: an
   * account or alias added meanwhile either is counted (refused) or is refused itself;
   * of two deletions at once, one deletes and the other finds no such domain.
   */
  async delDomain(domain: string, also: DomainKeys = { keys: [], sets: [] }): Promise<void> {
    const d = normalizeDomain(domain) ?? domain;
    const [accounts, aliases] = (await this.redis.eval(
      DEL_DOMAIN,
      3 + also.keys.length + also.sets.length,
      LOCAL_DOMAINS_KEY,
      `accounts:${d}`,
      `aliases:${d}`,
      ...also.keys,
      ...also.sets,
      d,
      also.keys.length,
    )) as [number, number];
    if (accounts === -1) throw new DirectoryError('unknown_domain', `domain ${d} does not exist`);
    if (accounts || aliases) {
      throw new DirectoryError(
        'in_use',
        `domain ${d} still has ${plural(accounts, 'account')} and ${plural(aliases, 'alias', 'aliases')}; delete them first`,
      );
    }
    await this.changed();
  }

  // ---- accounts
  private async localAddress(address: string): Promise<string> {
    const a = accountAddress(address);
    if (!a) throw new DirectoryError('invalid_address', `"${address}" is not a valid address`);
    const domain = a.slice(a.lastIndexOf('@') + 1);
    if (!(await this.isLocalDomain(domain))) throw notLocal(domain);
    return a;
  }

  /** Creates an account; with `admin`, with the admin role, in the same step. */
  async addUser(address: string, password: string, opts: { admin?: boolean } = {}): Promise<string> {
    const a = await this.localAddress(address);
    const weak = passwordWeakness(password, a);
    if (weak) throw new DirectoryError('weak_password', weak);
    if (await this.redis.exists(`account:${a}`))
      throw new DirectoryError('duplicate', `account ${a} already exists`);
    const h = await hashPassword(password);
    const domain = a.slice(a.lastIndexOf('@') + 1);
    const added = Number(
      await this.redis.eval(
        ADD_ACCOUNT,
        3,
        LOCAL_DOMAINS_KEY,
        `account:${a}`,
        `accounts:${domain}`,
        domain,
        h,
        new Date().toISOString(),
        a,
        opts.admin ? 'admin' : '',
      ),
    );
    // the domain was deleted since it was checked above
    if (added === -1) throw notLocal(domain);
    if (!added) throw new DirectoryError('duplicate', `account ${a} already exists`);
    await this.changed();
    return a;
  }

  async setPassword(address: string, password: string): Promise<void> {
    const a = await this.requireAccount(address);
    const weak = passwordWeakness(password, a);
    if (weak) throw new DirectoryError('weak_password', weak);
    await this.update(a, 'set', 'password', await hashPassword(password), SHUT_OUT);
  }

  /** Writes one field of an existing account; refused when it was deleted since it was checked. */
  private async update(
    a: string,
    how: 'set' | 'setnx' | 'del',
    field: string,
    value = '',
    script = UPDATE_ACCOUNT,
  ): Promise<void> {
    const res = Number(await this.redis.eval(script, 1, `account:${a}`, how, field, value));
    if (res === -1) throw new DirectoryError('not_found', `account ${a} does not exist`);
  }

  /**
   * Deletes the account and, in the same transaction, `also`: the keys other packages
   * keep for it (app passwords, forwarding...), so that nothing of it is left for a new
   * account of the same address.
   */
  async delUser(address: string, also: readonly string[] = []): Promise<void> {
    const a = await this.requireAccount(address);
    await this.redis.eval(
      DEL_ACCOUNT,
      2 + also.length,
      `account:${a}`,
      `accounts:${a.split('@')[1]}`,
      ...also,
      a,
    );
    await this.changed();
  }

  /** Gives or takes the admin role (the admin console); the CLI needs no role, it has Redis. */
  async setAdmin(address: string, admin: boolean): Promise<string> {
    const a = await this.requireAccount(address);
    await (admin ? this.update(a, 'set', 'role', 'admin') : this.update(a, 'del', 'role'));
    return a;
  }

  async isAdmin(address: string): Promise<boolean> {
    return (await read(this.redis.hget(`account:${address.toLowerCase()}`, 'role'))) === 'admin';
  }

  /**
   * Locks an account (no login of any protocol, its password and app passwords alike,
   * while mail to it is still delivered) or unlocks it. The lock is a field of the
   * account record, so logins cached by the authenticator see it at once.
   */
  async setLocked(address: string, locked: boolean): Promise<string> {
    const a = await this.requireAccount(address);
    // locked again: it stays locked since the first time, which the console shows
    await (locked
      ? this.update(a, 'setnx', 'locked', new Date().toISOString(), SHUT_OUT)
      : this.update(a, 'del', 'locked'));
    return a;
  }

  async listUsers(domain?: string): Promise<string[]> {
    const domains = domain ? [normalizeDomain(domain) ?? domain] : await this.listDomains();
    if (domain && !(await this.isLocalDomain(domains[0]!)))
      throw new DirectoryError('unknown_domain', `domain ${domain} does not exist`);
    const all = await Promise.all(domains.map((d) => read(this.redis.smembers(`accounts:${d}`))));
    return all.flat().sort();
  }

  async accountExists(address: string): Promise<boolean> {
    return (await read(this.redis.exists(`account:${address.toLowerCase()}`))) === 1;
  }

  private async requireAccount(address: string): Promise<string> {
    const a = await this.localAddress(address);
    if (!(await this.accountExists(a))) throw new DirectoryError('not_found', `account ${a} does not exist`);
    return a;
  }

  /** Checks a password; the same work is done for unknown accounts, so timing does not tell which exist. */
  async authenticate(address: string, password: string): Promise<string | null> {
    return (await this.checkPassword(address, password))?.account ?? null;
  }

  /**
   * As authenticate, and also returns the account record the password was checked
   * against, so a cache of verified credentials can tell later whether it still holds.
   */
  async checkPassword(
    address: string,
    password: string,
  ): Promise<{ account: string; record: AccountRecord } | null> {
    const a = address.trim().toLowerCase();
    const record = await this.accountRecord(a);
    if (!record) {
      await hashPassword(password);
      return null;
    }
    return (await verifyPassword(record.password, password)) ? { account: a, record } : null;
  }

  /** The stored fields of an account (the password hash among them), or null when it does not exist. */
  async accountRecord(address: string): Promise<AccountRecord | null> {
    const r = await read(this.redis.hgetall(`account:${address.trim().toLowerCase()}`));
    return r.password ? (r as AccountRecord) : null;
  }

  // ---- aliases and catch-all
  /** Adds targets to those the alias has; returns the alias with every target it now has. */
  async addAlias(source: string, targets: string[]): Promise<{ source: string; targets: string[] }> {
    let src: string;
    if (source.startsWith('@')) {
      const d = normalizeDomain(source.slice(1));
      if (!d)
        throw new DirectoryError('invalid_address', `"${source}" is not a valid catch-all (use @domain)`);
      if (!(await this.isLocalDomain(d)))
        throw new DirectoryError('unknown_domain', `domain ${d} is not a local domain`);
      src = `@${d}`;
    } else {
      src = await this.localAddress(source);
    }
    if (!targets.length)
      throw new DirectoryError('invalid_address', 'an alias needs at least one target address');
    const normalized = targets.map((t) => {
      const p = parseMailAddress(t);
      if (!p.ok) throw new DirectoryError('invalid_address', `"${t}" is not a valid address`);
      return p.value.address.toLowerCase();
    });
    const domain = src.slice(src.lastIndexOf('@') + 1);
    const res = (await read(
      this.redis.eval(
        ADD_ALIAS,
        3,
        LOCAL_DOMAINS_KEY,
        `alias:${src}`,
        `aliases:${domain}`,
        domain,
        src,
        ...normalized,
      ),
    )) as string[] | number;
    // the domain was deleted since it was checked above
    if (typeof res === 'number') throw notLocal(domain);
    await this.changed();
    return { source: src, targets: res.sort() };
  }

  async delAlias(source: string, target?: string): Promise<void> {
    const src = source.toLowerCase();
    if (!(await this.redis.exists(`alias:${src}`)))
      throw new DirectoryError('not_found', `alias ${src} does not exist`);
    if (target) {
      if (!(await this.redis.srem(`alias:${src}`, target.toLowerCase()))) {
        throw new DirectoryError('not_found', `alias ${src} has no target ${target}`);
      }
      if ((await this.redis.scard(`alias:${src}`)) > 0) return this.changed();
    }
    const there = await this.redis.eval(DEL_ALIAS, 2, `alias:${src}`, `aliases:${src.split('@')[1]}`, src);
    // deleted meanwhile by another request: that one deleted it, this one did nothing
    // (a last target's removal empties the set, which Redis deletes with it)
    if (!target && there === 0) throw new DirectoryError('not_found', `alias ${src} does not exist`);
    await this.changed();
  }

  async listAliases(domain?: string): Promise<{ source: string; targets: string[] }[]> {
    const domains = domain ? [domain.toLowerCase()] : await this.listDomains();
    const sources = (await Promise.all(domains.map((d) => read(this.redis.smembers(`aliases:${d}`)))))
      .flat()
      .sort();
    const targets = await Promise.all(sources.map((s) => read(this.redis.smembers(`alias:${s}`))));
    return sources.map((source, i) => ({ source, targets: (targets[i] ?? []).sort() }));
  }

  /**
   * The addresses an account may send as (Postfix: smtpd_sender_login_maps): the account
   * itself and every alias that leads to it, directly or through other aliases. A
   * catch-all does not count: it receives for a domain, it does not own its addresses.
   */
  async addressesOf(account: string): Promise<string[]> {
    const a = account.toLowerCase();
    const owned = new Set<string>([a]);
    const aliases = (await this.listAliases()).filter((x) => !x.source.startsWith('@'));
    // grow the set until no alias adds a new owned address (nested aliases, loops end)
    for (let changed = true; changed;) {
      changed = false;
      for (const { source, targets } of aliases) {
        if (!owned.has(source) && targets.some((t) => owned.has(t))) {
          owned.add(source);
          changed = true;
        }
      }
    }
    return [...owned].sort();
  }

  /**
   * Whether mail to `address` reaches `account` and no one else: the account, its
   * plus-addresses, an alias (nested or not) whose expansion is that account alone. A
   * group alias or a catch-all does not count. Lookups of the named address only (cached
   * as RCPT TO's), not a walk over every alias as addressesOf does.
   */
  async leadsToAlone(address: string, account: string): Promise<boolean> {
    const a = account.toLowerCase();
    const { match } = await this.lookup(address);
    if (!match || match.kind === 'catchall') return false;
    if (match.kind === 'account') return match.account === a;
    try {
      const x = await this.expand(address);
      return x.remote.length === 0 && x.local.length === 1 && x.local[0]!.account === a;
    } catch (err) {
      // too big or too deep to expand: it does not lead to one account alone
      if (err instanceof AliasExpansionError) return false;
      throw err;
    }
  }

  /**
   * Decides whether a local-domain address exists (RCPT TO). Order as Postfix's
   * virtual alias and mailbox maps: exact alias, account, then the plus-address base
   * (`user+tag@` -> `user@`), then the domain's catch-all.
   */
  async resolve(address: string): Promise<RecipientMatch | null> {
    return (await this.lookup(address)).match;
  }

  /**
   * One Redis round trip for a recipient: is its domain local, and if so what does the
   * address resolve to. `match` is null for a remote domain or an unknown local address.
   * Throws DirectoryUnavailableError when Redis fails any part of the question.
   */
  async lookup(address: string): Promise<Lookup> {
    return (await this.lookupMany([address]))[0]!;
  }

  /**
   * `lookup` of several addresses (one level of an alias expansion): those the cache
   * holds without Redis, all the others in one round trip. Answers in the order asked.
   */
  async lookupMany(addresses: readonly string[]): Promise<Lookup[]> {
    const all = addresses.map((a) => a.toLowerCase());
    const found = all.map((a) => {
      const hit = this.cache?.get(`rcpt:${a}`);
      return hit && typeof hit === 'object' ? hit : undefined;
    });
    const missing = all.flatMap((a, i) => (found[i] ? [] : [{ a, i }]));
    if (!missing.length) return found as Lookup[];
    const generation = this.cache?.generation ?? 0;
    const pipe = this.redis.pipeline();
    const reads = missing.map(({ a }) => ({ from: pipe.length, read: this.queueLookup(pipe, a) }));
    const res = await answers(pipe);
    missing.forEach(({ a, i }, n) => {
      const { from, read } = reads[n]!;
      const answer = read(res.slice(from, reads[n + 1]?.from ?? res.length));
      this.cache?.set(`rcpt:${a}`, answer, generation);
      found[i] = answer;
    });
    return found as Lookup[];
  }

  /** Queues the commands that look `a` up; the function returned reads their answers. */
  private queueLookup(pipe: ChainableCommander, a: string): (res: unknown[]) => Lookup {
    const at = a.lastIndexOf('@');
    const local = a.slice(0, at);
    const domain = a.slice(at + 1);
    const { base, tag } = splitPlus(local, this.recipientDelimiter);
    const candidates = [a, ...(tag !== null ? [`${base}@${domain}`] : [])];
    pipe.sismember(LOCAL_DOMAINS_KEY, domain);
    for (const c of candidates) pipe.smembers(`alias:${c}`).exists(`account:${c}`);
    pipe.smembers(`alias:@${domain}`);
    return (res) => {
      const localDomain = res[0] === 1;
      if (!localDomain) return { localDomain, match: null };
      for (let i = 0; i < candidates.length; i++) {
        const aliasTargets = res[1 + i * 2] as string[] | undefined;
        const exists = res[2 + i * 2] as number | undefined;
        if (aliasTargets?.length)
          return { localDomain, match: { kind: 'alias', source: candidates[i]!, targets: aliasTargets } };
        if (exists) return { localDomain, match: { kind: 'account', account: candidates[i]! } };
      }
      const catchall = res[1 + candidates.length * 2] as string[] | undefined;
      if (catchall?.length)
        return { localDomain, match: { kind: 'catchall', source: `@${domain}`, targets: catchall } };
      return { localDomain, match: null };
    };
  }

  /**
   * Expands a recipient into the accounts that get a copy and the external addresses
   * to forward to. Aliases nest; a loop stops at an address seen before (each account
   * gets one copy however many paths lead to it). Level by level: the targets of one
   * level are looked up in one round trip (lookupMany), so an alias of a thousand members
   * costs two round trips, not a thousand and one.
   *
   * Throws AliasExpansionError when the recipient would expand to more addresses than
   * the limit (as Postfix counts them: each address once, an alias replaced by its
   * members; an address whose lookup is still to come counts as one), checked before
   * each level is looked up, or when a chain nests deeper than ALIAS_RECURSION_LIMIT.
   */
  async expand(address: string): Promise<Expansion> {
    const root = address.toLowerCase();
    const local = new Map<string, string>();
    const remote = new Set<string>();
    const seen = new Set([root]);
    /** Addresses reached that are not aliases: accounts, external, unknown. */
    let reached = 0;
    let level = [root];
    for (let depth = 0; level.length; depth++) {
      if (reached + level.length > this.expansionLimit) {
        const exceeded = {
          kind: 'size',
          reached: reached + level.length,
          limit: this.expansionLimit,
        } as const;
        throw new AliasExpansionError(root, exceeded);
      }
      if (depth > ALIAS_RECURSION_LIMIT)
        throw new AliasExpansionError(root, { kind: 'nesting', limit: ALIAS_RECURSION_LIMIT });
      const found = await this.lookupMany(level);
      const next: string[] = [];
      for (const [i, { localDomain, match: m }] of found.entries()) {
        if (!m || m.kind === 'account') reached++;
        if (!localDomain) remote.add(level[i]!);
        else if (m?.kind === 'account') {
          if (!local.has(m.account)) local.set(m.account, root);
        } else if (m) {
          for (const target of m.targets) {
            const t = target.toLowerCase();
            if (seen.has(t)) continue;
            seen.add(t);
            next.push(t);
          }
        }
      }
      level = next;
    }
    return { local: [...local].map(([account, via]) => ({ account, via })), remote: [...remote] };
  }
}

export interface Lookup {
  localDomain: boolean;
  match: RecipientMatch | null;
}

const changedChannel = (redis: Redis) => `${redis.options.keyPrefix ?? ''}directory:changed`;

/**
 * Recipient lookups (`rcpt:<address>`) and whether a domain is ours (`domain:<name>`),
 * kept for a while, emptied whenever any instance announces a change. A lookup that
 * started before a change is not stored (its answer may be the old one).
 */
class LookupCache {
  private readonly entries = new Map<string, { value: Lookup | boolean; expires: number }>();
  private sub: Redis | null = null;
  /** True while the change channel is subscribed; nothing is stored otherwise. */
  private subscribed = false;
  /** Bumped on every clear, so an answer read before a change is not cached after it. */
  generation = 0;

  constructor(
    private readonly redis: Redis,
    private readonly ttlMs: number,
    private readonly maxEntries: number,
  ) {}

  get(key: string): Lookup | boolean | undefined {
    this.listen();
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expires > Date.now()) return e.value;
    this.entries.delete(key);
    return undefined;
  }

  set(key: string, value: Lookup | boolean, generation: number): void {
    if (generation !== this.generation || !this.subscribed) return;
    if (this.entries.size >= this.maxEntries) this.entries.clear();
    this.entries.set(key, { value, expires: Date.now() + this.ttlMs });
  }

  clear(): void {
    this.generation++;
    this.entries.clear();
  }

  private listen(): void {
    if (this.sub) return;
    const sub = this.redis.duplicate({
      keyPrefix: '',
      lazyConnect: false,
      enableAutoPipelining: false,
      autoResubscribe: false,
    });
    this.sub = sub;
    sub.on('message', () => this.clear());
    sub.on('close', () => {
      this.subscribed = false;
      this.clear();
    });
    // (re)subscribe on every connect; announcements missed meanwhile: start again from Redis
    sub.on('ready', () => {
      sub.subscribe(changedChannel(this.redis)).then(
        () => {
          this.clear();
          this.subscribed = true;
        },
        () => undefined,
      );
    });
    sub.on('error', () => undefined);
  }

  close(): void {
    this.sub?.disconnect();
    this.subscribed = false;
    this.entries.clear();
  }
}

function notLocal(domain: string): DirectoryError {
  return new DirectoryError(
    'unknown_domain',
    `domain ${domain} is not a local domain (add it with: mailyard domain add ${domain})`,
  );
}
