import { createHmac, randomBytes } from 'node:crypto';

export interface CredentialCacheOptions {
  /** How long a verified credential is remembered, in ms; 0 disables the cache. */
  ttlMs: number;
  /** Most entries kept; the oldest goes first when full. */
  maxEntries?: number;
  /** The clock, for tests. */
  now?: () => number;
}

/** What a cached login stands for: the credential that was verified, named so it can be re-read. */
export type CachedCredential = { via: 'password' } | { via: 'app-password'; name: string };

interface Entry {
  account: string;
  credential: CachedCredential;
  /** Keyed hash of the stored credential the password was verified against. */
  version: string;
  expires: number;
}

export interface CredentialCacheStats {
  hits: number;
  misses: number;
  /** Entries dropped because the stored credential changed since (password changed, app password revoked). */
  stale: number;
}

/**
 * Verified logins remembered for a short time (Dovecot's auth_cache), so a client that
 * opens a connection per folder does not pay for argon2id every time.
 *
 * Nothing here can be read back into a password: an entry is found by HMAC-SHA256 of
 * (user name, password) under a key made at random for this process, and it carries an
 * HMAC of the stored credential it was verified against (the whole account record, plus
 * the app password's record). The caller re-reads those from Redis on every lookup and
 * an entry counts only while they are unchanged, so a changed password, a deleted
 * account or a revoked app password is refused at once, not after the TTL. Only
 * successes are stored: a wrong password always takes the full path and counts as a
 * failure for the lockout.
 */
export class CredentialCache {
  private readonly key = randomBytes(32);
  private readonly entries = new Map<string, Entry>();
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  readonly stats: CredentialCacheStats = { hits: 0, misses: 0, stale: 0 };

  constructor(opts: CredentialCacheOptions) {
    this.ttlMs = opts.ttlMs;
    this.maxEntries = Math.max(1, opts.maxEntries ?? 10_000);
    this.now = opts.now ?? Date.now;
  }

  get enabled(): boolean {
    return this.ttlMs > 0;
  }

  get size(): number {
    return this.entries.size;
  }

  private mac(...parts: string[]): string {
    const h = createHmac('sha256', this.key);
    // length-prefixed, so no two different tuples hash the same input
    for (const p of parts) h.update(`${Buffer.byteLength(p)}:`).update(p);
    return h.digest('base64');
  }

  /**
   * The account a user name and password logged in to within the TTL, provided the
   * credential it was verified against is still the one stored: `storedNow` re-reads it
   * (null when it is gone). A changed or missing credential drops the entry.
   */
  async get(
    user: string,
    password: string,
    storedNow: (credential: CachedCredential) => Promise<string | null>,
  ): Promise<{ account: string; credential: CachedCredential } | null> {
    if (!this.enabled) return null;
    const id = this.mac('login', user, password);
    const e = this.entries.get(id);
    if (!e || e.expires <= this.now()) {
      if (e) this.entries.delete(id);
      this.stats.misses++;
      return null;
    }
    const stored = await storedNow(e.credential);
    if (stored === null || e.version !== this.mac('stored', stored)) {
      // compare with what is in the map now: a concurrent login may have replaced it
      if (this.entries.get(id) === e) this.entries.delete(id);
      this.stats.stale++;
      this.stats.misses++;
      return null;
    }
    this.stats.hits++;
    return { account: e.account, credential: e.credential };
  }

  /** Remembers a login that was just verified against `stored`. */
  remember(
    user: string,
    password: string,
    account: string,
    credential: CachedCredential,
    stored: string,
  ): void {
    if (!this.enabled) return;
    const id = this.mac('login', user, password);
    const now = this.now();
    this.entries.delete(id);
    // one TTL for all, so insertion order is expiry order: drop the expired from the front
    for (const [k, e] of this.entries) {
      if (e.expires > now && this.entries.size < this.maxEntries) break;
      this.entries.delete(k);
    }
    this.entries.set(id, {
      account,
      credential,
      version: this.mac('stored', stored),
      expires: now + this.ttlMs,
    });
  }
}
