import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { announceRevocation } from './revocations.js';

export const MAX_APP_PASSWORDS = 50;
const ALPHABET = 'abcdefghijkmnpqrstuvwxyz23456789';

export interface AppPasswordInfo {
  name: string;
  created: string;
  /** The last login with it (ISO 8601) and the client's address, when it has been used. */
  lastUsed?: string;
  lastIp?: string;
}

/**
 * Per-client passwords a user creates and revokes (one per phone, laptop, webmail).
 * They are 20 random characters (100 bits), so a plain SHA-256 is enough to store them:
 * unlike a chosen password there is nothing to guess, and checking every one of an
 * account's app passwords stays fast.
 *   apppw:<account>  HASH  <name> -> JSON {hash, created}
 */
export class AppPasswords {
  constructor(private readonly redis: Redis) {}

  async create(account: string, name: string): Promise<string> {
    const a = account.toLowerCase();
    if (!/^[\w .@-]{1,64}$/.test(name))
      throw new Error('app password name must be 1-64 letters, digits, spaces or ._@-');
    if ((await this.redis.hlen(`apppw:${a}`)) >= MAX_APP_PASSWORDS) {
      throw new Error(`account ${a} already has ${MAX_APP_PASSWORDS} app passwords; revoke one first`);
    }
    const bytes = randomBytes(20);
    const secret = [...bytes].map((b) => ALPHABET[b % ALPHABET.length]).join('');
    const value = JSON.stringify({ hash: sha256(secret), created: new Date().toISOString() });
    if (!(await this.redis.hsetnx(`apppw:${a}`, name, value)))
      throw new Error(`app password "${name}" already exists for ${a}`);
    return secret;
  }

  async list(account: string): Promise<AppPasswordInfo[]> {
    const a = account.toLowerCase();
    const [all, used] = await Promise.all([
      this.redis.hgetall(`apppw:${a}`),
      this.redis.hgetall(`apppw:used:${a}`),
    ]);
    return Object.entries(all)
      .map(([name, v]): AppPasswordInfo => {
        const u = used[name] ? (JSON.parse(used[name]) as { at: string; ip: string }) : null;
        return {
          name,
          created: (JSON.parse(v) as { created: string }).created,
          ...(u ? { lastUsed: u.at, lastIp: u.ip } : {}),
        };
      })
      .sort((x, y) => x.name.localeCompare(y.name));
  }

  /** Deletes it, and tells every instance, whose sessions logged in with it end (CredentialRevocations). */
  async revoke(account: string, name: string): Promise<void> {
    if (!(await this.redis.hdel(`apppw:${account.toLowerCase()}`, name))) {
      throw new Error(`no app password "${name}" for ${account.toLowerCase()}`);
    }
    await this.redis.hdel(`apppw:used:${account.toLowerCase()}`, name);
    await announceRevocation(this.redis, account, name);
  }

  /** Returns the name of the matching app password, or null. */
  async verify(account: string, secret: string): Promise<string | null> {
    return (await this.match(account, secret))?.name ?? null;
  }

  /** The matching app password's name and stored record (as `records` returns it), or null. */
  async match(account: string, secret: string): Promise<{ name: string; record: string } | null> {
    const all = await this.records(account);
    const want = Buffer.from(sha256(secret.replace(/[\s-]/g, '')), 'hex');
    for (const [name, v] of Object.entries(all)) {
      const have = Buffer.from((JSON.parse(v) as { hash: string }).hash, 'hex');
      if (have.length === want.length && timingSafeEqual(have, want)) return { name, record: v };
    }
    return null;
  }

  /** Every app password of an account as stored: name -> record (hash and creation time). */
  async records(account: string): Promise<Record<string, string>> {
    return this.redis.hgetall(`apppw:${account.toLowerCase()}`);
  }
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}
