import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { announceRevocation } from './revocations.js';

export const MAX_APP_PASSWORDS = 50;
const ALPHABET = 'abcdefghijkmnpqrstuvwxyz23456789';

/** The keys of an account's app passwords and of their last use, which go with the account. */
export const appPasswordKeys = (account: string) => [
  `apppw:${account.toLowerCase()}`,
  `apppw:used:${account.toLowerCase()}`,
];

// -1: no such account (a record without a password is none), -2: at the limit, 0: the name is taken
const CREATE_SCRIPT = `
if redis.call('HEXISTS', KEYS[1], 'password') == 0 then return -1 end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[1]) then return -2 end
return redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3])`;

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
 * Only an existing account gets one: the check and the write are one script, so an
 * account deleted meanwhile is not left with an app password its successor of the same
 * address would accept.
 */
export class AppPasswords {
  constructor(private readonly redis: Redis) {}

  async create(account: string, name: string): Promise<string> {
    const a = account.toLowerCase();
    if (!/^[\w .@-]{1,64}$/.test(name))
      throw new Error('app password name must be 1-64 letters, digits, spaces or ._@-');
    const bytes = randomBytes(20);
    const secret = [...bytes].map((b) => ALPHABET[b % ALPHABET.length]).join('');
    const value = JSON.stringify({ hash: sha256(secret), created: new Date().toISOString() });
    const stored = (await this.redis.eval(
      CREATE_SCRIPT,
      2,
      `account:${a}`,
      `apppw:${a}`,
      MAX_APP_PASSWORDS,
      name,
      value,
    )) as number;
    if (stored === -1) throw new Error(`no account ${a}`);
    if (stored === -2)
      throw new Error(`account ${a} already has ${MAX_APP_PASSWORDS} app passwords; revoke one first`);
    if (stored === 0) throw new Error(`app password "${name}" already exists for ${a}`);
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
