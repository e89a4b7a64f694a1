import type { Redis } from 'ioredis';
import { normalizeDomain } from '@mailyard/smtp-core';
import { DKIM_ALGORITHMS, DkimError, type DkimAlgorithm, type DkimKey } from './keys.js';

export interface StoredDkimKey extends DkimKey {
  domain: string;
  selector: string;
}

// RFC 6376 §3.1: a selector is one or more DNS labels.
const SELECTOR = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

/**
 * DKIM keys per domain and selector, in Redis next to the rest of the directory.
 * Redis already holds what an attacker with access could abuse (password hashes,
 * app password hashes, the aliases that decide who may send as whom), so whoever can
 * read it could already send as our users through the MSA: the private keys add no
 * new trust boundary. Protect Redis accordingly (password, TLS, private network).
 *
 *   dkim:domains          SET   domains with at least one key
 *   dkim:key:<domain>     HASH  <selector> -> JSON {algorithm, privateKey, publicKey, created, pending?}
 */
export class DkimKeyStore {
  constructor(private readonly redis: Redis) {}

  static normalize(domain: string, selector: string): { domain: string; selector: string } {
    const d = normalizeDomain(domain);
    if (!d) throw new DkimError(`"${domain}" is not a valid domain name`);
    const s = selector.toLowerCase();
    if (!SELECTOR.test(s) || s.length > 63)
      throw new DkimError(`"${selector}" is not a valid selector (letters, digits and hyphens)`);
    return { domain: d, selector: s };
  }

  /** Stores a new key; refuses to overwrite one (a published selector must keep its key). */
  async add(domain: string, selector: string, key: DkimKey): Promise<StoredDkimKey> {
    const n = DkimKeyStore.normalize(domain, selector);
    const ok = await this.redis.hsetnx(`dkim:key:${n.domain}`, n.selector, JSON.stringify(key));
    if (!ok)
      throw new DkimError(
        `selector ${n.selector} already exists for ${n.domain}; choose another one or delete it first`,
      );
    await this.redis.sadd('dkim:domains', n.domain);
    return { ...key, ...n };
  }

  /**
   * Lets a pending key sign (its record is published); false when it signed already.
   * Refused when there is no such key.
   */
  async activate(domain: string, selector: string): Promise<boolean> {
    const k = await this.get(domain, selector);
    if (!k) throw new DkimError(`no DKIM key with selector ${selector} for ${domain}`);
    if (!k.pending) return false;
    const { domain: d, selector: s, pending: _, ...key } = k;
    await this.redis.hset(`dkim:key:${d}`, s, JSON.stringify(key));
    return true;
  }

  async get(domain: string, selector: string): Promise<StoredDkimKey | null> {
    const n = DkimKeyStore.normalize(domain, selector);
    const raw = await this.redis.hget(`dkim:key:${n.domain}`, n.selector);
    return raw ? { ...(JSON.parse(raw) as DkimKey), ...n } : null;
  }

  /** Keys of one domain (or of every domain), oldest first. */
  async list(domain?: string): Promise<StoredDkimKey[]> {
    const domains = domain
      ? [normalizeDomain(domain) ?? domain.toLowerCase()]
      : (await this.redis.smembers('dkim:domains')).sort();
    const out: StoredDkimKey[] = [];
    for (const d of domains) {
      const all = await this.redis.hgetall(`dkim:key:${d}`);
      for (const [selector, raw] of Object.entries(all)) {
        try {
          out.push({ ...(JSON.parse(raw) as DkimKey), domain: d, selector });
        } catch {
          // a corrupt entry is skipped here and reported by the signer's log
        }
      }
    }
    return out.sort(
      (a, b) =>
        a.domain.localeCompare(b.domain) ||
        a.created.localeCompare(b.created) ||
        a.selector.localeCompare(b.selector),
    );
  }

  async remove(domain: string, selector: string): Promise<void> {
    const n = DkimKeyStore.normalize(domain, selector);
    if (!(await this.redis.hdel(`dkim:key:${n.domain}`, n.selector)))
      throw new DkimError(`no DKIM key with selector ${n.selector} for ${n.domain}`);
    if (!(await this.redis.hlen(`dkim:key:${n.domain}`))) await this.redis.srem('dkim:domains', n.domain);
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
