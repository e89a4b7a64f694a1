import type { Redis } from 'ioredis';
import { normalizeDomain } from '@mailyard/smtp-core';
import { DKIM_ALGORITHMS, DkimError, type DkimAlgorithm, type DkimKey } from './keys.js';

export interface StoredDkimKey extends DkimKey {
  domain: string;
  selector: string;
  /**
   * Stored but not signing yet: a rotation's new key waits until its DNS record is seen
   * published (`mailyard dkim activate`); the key it replaces signs meanwhile.
   */
  pending: boolean;
}

// RFC 6376 §3.1: a selector is one or more DNS labels.
const SELECTOR = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

/**
 * Redis keys of the DKIM keys (under the installation's REDIS_PREFIX). Renaming one is a
 * migration: running instances, including those of the previous release during a rolling
 * upgrade or after a rollback, and the stored keys use these names.
 */
export const DkimRedisKeys = {
  /** SET of the domains with at least one key. */
  domains: 'dkim:domains',
  /**
   * HASH selector -> JSON {algorithm, privateKey, publicKey, created}: the keys that sign
   * (the newest of each algorithm) and those they replaced. Every release signs with the
   * newest key of each algorithm in it.
   */
  keys: (domain: string) => `dkim:key:${domain}`,
  /**
   * HASH selector -> the same JSON: keys waiting for `activate`. Apart from `keys` so that
   * a release from before pending keys, which reads only `keys`, never signs with one;
   * `activate` moves the entry into `keys`.
   */
  pending: (domain: string) => `dkim:pending:${domain}`,
} as const;

// KEYS: keys, pending, domains[, local domains]; ARGV: selector, JSON, 1 (signs) or 2
// (pending), domain. A selector is unique across both hashes: a published selector must
// keep its key. -1: the domain is not in the set of local domains (deleted meanwhile).
const ADD = `
if KEYS[4] and redis.call('SISMEMBER', KEYS[4], ARGV[4]) == 0 then return -1 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[tonumber(ARGV[3])], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
return 1`;

// KEYS: keys, pending; ARGV: selector. 1 moved, 0 signed already, -1 no such key,
// -2 the selector is in both (a previous release stored it again in between).
const ACTIVATE = `
local v = redis.call('HGET', KEYS[2], ARGV[1])
if not v then
  return redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 and 0 or -1
end
if redis.call('HSETNX', KEYS[1], ARGV[1], v) == 0 then return -2 end
redis.call('HDEL', KEYS[2], ARGV[1])
return 1`;

// KEYS: keys, pending, domains; ARGV: selector, domain.
const REMOVE = `
local n = redis.call('HDEL', KEYS[1], ARGV[1]) + redis.call('HDEL', KEYS[2], ARGV[1])
if n > 0 and redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
return n`;

// KEYS: pending, keys; ARGV: 'get' and a selector, or 'all'. Both hashes read in one step
// ({pending, signing}), so a key `activate` moves between them is seen in one. A script
// that writes nothing (no-writes), not a MULTI: Redis at its maxmemory refuses every
// command queued in a MULTI, reads too, and signing, deleting a key or a domain must not
// wait for room.
const READ = `#!lua flags=no-writes
if ARGV[1] == 'get' then
  return {redis.call('HGET', KEYS[1], ARGV[2]), redis.call('HGET', KEYS[2], ARGV[2])}
end
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}`;

/**
 * DKIM keys per domain and selector, in Redis next to the rest of the directory.
 * Redis already holds what an attacker with access could abuse (password hashes,
 * app password hashes, the aliases that decide who may send as whom), so whoever can
 * read it could already send as our users through the MSA: the private keys add no
 * new trust boundary. Protect Redis accordingly (password, TLS, private network).
 * The Redis keys are `DkimRedisKeys`.
 */
export class DkimKeyStore {
  constructor(
    private readonly redis: Redis,
    private readonly opts: {
      /**
       * The SET of local domains: `add` stores a key only for a domain in it, checked in
       * the step that stores it, so a domain deleted meanwhile (with its keys) gets none.
       */
      localDomains?: string;
    } = {},
  ) {}

  /**
   * The Redis keys of a domain's keys, and the sets that list it: what goes with the
   * domain when it is deleted.
   */
  static keysOf(domain: string): { keys: string[]; sets: string[] } {
    return {
      keys: [DkimRedisKeys.keys(domain), DkimRedisKeys.pending(domain)],
      sets: [DkimRedisKeys.domains],
    };
  }

  static normalize(domain: string, selector: string): { domain: string; selector: string } {
    const d = normalizeDomain(domain);
    if (!d) throw new DkimError(`"${domain}" is not a valid domain name`);
    const s = selector.toLowerCase();
    if (!SELECTOR.test(s) || s.length > 63)
      throw new DkimError(`"${selector}" is not a valid selector (letters, digits and hyphens)`);
    return { domain: d, selector: s };
  }

  /**
   * Stores a new key, `pending` (waiting for `activate`) or signing; refuses to overwrite
   * one (a published selector must keep its key).
   */
  async add(
    domain: string,
    selector: string,
    key: DkimKey,
    opts: { pending?: boolean } = {},
  ): Promise<StoredDkimKey> {
    const n = DkimKeyStore.normalize(domain, selector);
    const { algorithm, privateKey, publicKey, created } = key;
    const local = this.opts.localDomains;
    const ok = Number(
      await this.redis.eval(
        ADD,
        local ? 4 : 3,
        DkimRedisKeys.keys(n.domain),
        DkimRedisKeys.pending(n.domain),
        DkimRedisKeys.domains,
        ...(local ? [local] : []),
        n.selector,
        JSON.stringify({ algorithm, privateKey, publicKey, created }),
        opts.pending ? 2 : 1,
        n.domain,
      ),
    );
    if (ok === -1) throw new DkimError(`domain ${n.domain} is not a local domain`, 'not_local');
    if (!ok)
      throw new DkimError(
        `selector ${n.selector} already exists for ${n.domain}; choose another one or delete it first`,
      );
    return { ...key, ...n, pending: !!opts.pending };
  }

  /**
   * Lets a pending key sign (its record is published), moving it into the hash signers
   * read in one step; false when it signed already. Refused when there is no such key
   * (one deleted meanwhile stays deleted).
   */
  async activate(domain: string, selector: string): Promise<boolean> {
    const n = DkimKeyStore.normalize(domain, selector);
    const r = Number(
      await this.redis.eval(
        ACTIVATE,
        2,
        DkimRedisKeys.keys(n.domain),
        DkimRedisKeys.pending(n.domain),
        n.selector,
      ),
    );
    if (r === -1) throw new DkimError(`no DKIM key with selector ${n.selector} for ${n.domain}`);
    if (r === -2)
      throw new DkimError(
        `selector ${n.selector} of ${n.domain} holds two keys; delete it and generate a key under a new selector`,
      );
    return r === 1;
  }

  async get(domain: string, selector: string): Promise<StoredDkimKey | null> {
    const n = DkimKeyStore.normalize(domain, selector);
    // pending first: `activate` moves a key from there to the signing hash, never back
    const [pending, signing] = (await this.read(n.domain, 'get', n.selector)) as (string | null)[];
    const raw = signing ?? pending;
    return raw ? parseKey(raw, n.domain, n.selector, !signing) : null;
  }

  /** Keys of one domain (or of every domain), oldest first. */
  async list(domain?: string): Promise<StoredDkimKey[]> {
    const domains = domain
      ? [normalizeDomain(domain) ?? domain.toLowerCase()]
      : (await this.redis.smembers(DkimRedisKeys.domains)).sort();
    const out: StoredDkimKey[] = [];
    for (const d of domains) {
      const [pending, signing] = (await this.read(d, 'all')) as string[][];
      const keys = new Map<string, StoredDkimKey>();
      for (const [all, isPending] of [
        [pending ?? [], true],
        [signing ?? [], false],
      ] as const)
        for (const [selector, raw] of pairs(all)) {
          try {
            keys.set(selector, parseKey(raw, d, selector, isPending));
          } catch {
            // a corrupt entry is skipped here and reported by the signer's log
          }
        }
      out.push(...keys.values());
    }
    return out.sort(
      (a, b) =>
        a.domain.localeCompare(b.domain) ||
        a.created.localeCompare(b.created) ||
        a.selector.localeCompare(b.selector),
    );
  }

  /** Both hashes of a domain, read in one step (READ). */
  private read(domain: string, ...how: ['get', string] | ['all']): Promise<unknown[]> {
    return this.redis.eval(
      READ,
      2,
      DkimRedisKeys.pending(domain),
      DkimRedisKeys.keys(domain),
      ...how,
    ) as Promise<unknown[]>;
  }

  /** Deletes a key, signing or pending. */
  async remove(domain: string, selector: string): Promise<void> {
    const n = DkimKeyStore.normalize(domain, selector);
    const removed = await this.redis.eval(
      REMOVE,
      3,
      DkimRedisKeys.keys(n.domain),
      DkimRedisKeys.pending(n.domain),
      DkimRedisKeys.domains,
      n.selector,
      n.domain,
    );
    if (!Number(removed)) throw new DkimError(`no DKIM key with selector ${n.selector} for ${n.domain}`);
  }

  /**
   * The keys to sign a domain's mail with: the newest key of each algorithm that is not
   * pending, so a domain with both an RSA and an Ed25519 key gets both signatures (RFC
   * 8463 §5 recommends signing with both while receivers adopt Ed25519), and a rotated-in
   * key signs only once it is activated.
   */
  async signingKeys(domain: string): Promise<StoredDkimKey[]> {
    const all = await this.list(domain);
    const newest = new Map<DkimAlgorithm, StoredDkimKey>();
    for (const k of all) if (DKIM_ALGORITHMS.includes(k.algorithm) && !k.pending) newest.set(k.algorithm, k);
    return DKIM_ALGORITHMS.flatMap((a) => newest.get(a) ?? []);
  }
}

/** A stored entry; only the key's own fields (its state is the hash it is in). */
function parseKey(raw: string, domain: string, selector: string, pending: boolean): StoredDkimKey {
  const { algorithm, privateKey, publicKey, created } = JSON.parse(raw) as DkimKey;
  return { algorithm, privateKey, publicKey, created, domain, selector, pending };
}

/** HGETALL's answer inside a script, field and value after field and value, as pairs. */
function pairs(flat: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
}
