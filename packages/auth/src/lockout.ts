import { createHash } from 'node:crypto';
import type { ChainableCommander, Redis } from 'ioredis';
import { ipToBigInt } from '@mailyard/config';

export interface LockoutPolicy {
  /** Failures for one account from one client address before that pair is locked. */
  accountIpThreshold: number;
  /** Failures from one client address, over all accounts, before the address is locked. */
  ipThreshold: number;
  /** Failures for one account from all addresses together from which it counts as under attack. */
  accountThreshold: number;
  /**
   * While the account is under attack: attempts per minute at it, together, from
   * addresses that have failed for it before (an address that has not is never held
   * back). Only the attempts let through count: refused ones do not use it up.
   */
  accountAttemptsPerMinute: number;
  /** While under attack, a failure is answered after this delay, doubled for every further `accountThreshold` failures. */
  failureDelayMs: number;
  maxFailureDelayMs: number;
  /** Failures are forgotten after this many seconds without a new one. */
  windowSeconds: number;
  /** First lock duration; each further failure while over the threshold doubles it. */
  baseLockSeconds: number;
  maxLockSeconds: number;
}

export const DEFAULT_LOCKOUT: LockoutPolicy = {
  accountIpThreshold: 5,
  ipThreshold: 20,
  accountThreshold: 20,
  accountAttemptsPerMinute: 10,
  failureDelayMs: 1000,
  maxFailureDelayMs: 15_000,
  windowSeconds: 15 * 60,
  baseLockSeconds: 30,
  maxLockSeconds: 3600,
};

/** What the guard says before a password is checked. */
export type LoginVerdict =
  | { verdict: 'check' }
  /** Refused without looking at the password: locked, or held back while the account is under attack. */
  | { verdict: 'refuse'; scope: 'ip' | 'account-ip' | 'account-rate'; retryAfterSeconds: number };

/**
 * The client address as the lockout counts it: an IPv4 address as it is, an IPv6 one
 * by its /64, the smallest network a site gets (RFC 6177), since one client can use
 * any of its 2^64 addresses (mox counts failures per /64 too).
 */
export function clientKey(ip: string): string {
  const a = ipToBigInt(ip);
  if (!a) return ip;
  if (a.family === 4) return [24n, 16n, 8n, 0n].map((s) => (a.value >> s) & 255n).join('.');
  const groups = [112n, 96n, 80n, 64n].map((s) => ((a.value >> s) & 0xffffn).toString(16));
  return `${groups.join(':')}::/64`;
}

/** The longest account name kept as it is in a key name: a mail path's limit (RFC 5321 §4.5.3.1.3). */
const KEY_NAME_MAX = 256;

/**
 * The account as the lockout's keys name it: as given (trimmed, lower case), or by its
 * SHA-256 when longer than any address can be. A login name is the client's to choose,
 * and every failure writes keys named by it, at maxmemory too (the script below): a
 * guesser sending kilobyte-long names would otherwise grow Redis by that much a guess.
 */
function accountKey(account: string): string {
  const a = account.trim().toLowerCase();
  return a.length <= KEY_NAME_MAX ? a : `sha256:${createHash('sha256').update(a).digest('hex')}`;
}

/**
 * Failed logins, counted in Redis for every service (SMTP submission, IMAP, POP3,
 * webmail), so that the right user always gets in and a guesser does not.
 *
 * The rule (DESIGN.md promise 8): abuse is throttled where it comes from.
 *  - An address that fails `accountIpThreshold` times for one account is locked for
 *    that account (account + address); one that fails `ipThreshold` times over any
 *    accounts is locked for all. Locks double with every further failure, up to
 *    `maxLockSeconds`. Nobody else is affected: the same account from another address
 *    logs in.
 *  - An account that failed `accountThreshold` times from anywhere is under attack,
 *    most likely from many addresses at once. Addresses that have failed for this
 *    account then share `accountAttemptsPerMinute` checked attempts at it (those
 *    refused do not count), and every failure is answered after a delay that grows
 *    with the attack; an address that has not failed for it is never held back (a
 *    colleague behind the same NAT mistyping their own password does not count), and
 *    a right password is answered at once. So a distributed attack gets about one
 *    guess per fresh address, and the user, whose address has not been guessing at
 *    this account, is let in.
 *  - Nothing locks an account for everyone: that would hand every attacker a way to
 *    keep its owner out.
 *
 * Compared with the models: Dovecot (auth_penalty, through anvil) delays the next
 * attempt of a failing IP by 2, 4, 8, up to 15 seconds and never locks anything;
 * Postfix has only smtpd_client_auth_rate_limit, AUTH commands per client per minute;
 * mox limits failures per IP (and per /26, /21; /64, /48, /32 for IPv6) per minute and
 * day and sleeps a second after each; Stalwart bans the IP address (fail2ban-like,
 * failures tracked per address and login name). None locks an account; ours adds the
 * per-account slowdown for attacks spread over many addresses.
 *
 * Every Redis error is thrown (see pipelineResults): a login that cannot be checked is
 * a temporary failure, never a login and never a failure that was not counted.
 *
 * Counting a failure (with the locks it sets) and taking an attempt at an account under
 * attack each run as one script that Redis runs at its maxmemory (allow-oom): a few
 * small keys that expire (the window, the lock, the minute). Refused, as a plain INCR or
 * SET is by a full Redis (noeviction), every wrong password was a temporary failure, not
 * counted: a guesser told a wrong password (temporary failure) from the right one (a
 * login), and no lock ever built up while Redis was full; and every address that had
 * failed for an account under attack was refused, its owner after one typo included.
 */
export class LoginGuard {
  constructor(
    private readonly redis: Redis,
    private readonly policy: LockoutPolicy = DEFAULT_LOCKOUT,
  ) {}

  private keys(ip: string, account: string) {
    const a = accountKey(account);
    const c = clientKey(ip);
    return {
      ipFail: `auth:fail:ip:${c}`,
      ipLock: `auth:lock:ip:${c}`,
      pairFail: `auth:fail:ip-acct:${c} ${a}`,
      pairLock: `auth:lock:ip-acct:${c} ${a}`,
      acctFail: `auth:fail:acct:${a}`,
      acctRate: `auth:rate:acct:${a}`,
    };
  }

  async check(ip: string, account: string): Promise<LoginVerdict> {
    const k = this.keys(ip, account);
    const p = this.policy;
    const [ipTtl, pairTtl, pairFails, acctFails] = (
      await pipelineResults(
        this.redis.pipeline().pttl(k.ipLock).pttl(k.pairLock).get(k.pairFail).get(k.acctFail),
      )
    ).map(Number) as [number, number, number, number];
    const retry = (ms: number) => Math.max(1, Math.ceil(ms / 1000));
    if (ipTtl > 0) return { verdict: 'refuse', scope: 'ip', retryAfterSeconds: retry(ipTtl) };
    if (pairTtl > 0) return { verdict: 'refuse', scope: 'account-ip', retryAfterSeconds: retry(pairTtl) };
    if (acctFails >= p.accountThreshold && pairFails > 0) {
      const full = Number(await this.redis.eval(TAKE_ATTEMPT, 1, k.acctRate, p.accountAttemptsPerMinute));
      if (full > 0) return { verdict: 'refuse', scope: 'account-rate', retryAfterSeconds: retry(full) };
    }
    return { verdict: 'check' };
  }

  /** Counts a failure; returns how long to wait before answering it. */
  async recordFailure(ip: string, account: string): Promise<{ delayMs: number }> {
    const k = this.keys(ip, account);
    const p = this.policy;
    const counts = (await this.redis.eval(
      RECORD_FAILURE,
      5,
      k.ipFail,
      k.pairFail,
      k.acctFail,
      k.ipLock,
      k.pairLock,
      p.windowSeconds,
      p.ipThreshold,
      p.accountIpThreshold,
      p.baseLockSeconds,
      p.maxLockSeconds,
    )) as number[];
    const acctCount = Number(counts[2]);
    if (acctCount < p.accountThreshold) return { delayMs: 0 };
    const doublings = Math.min(Math.floor((acctCount - p.accountThreshold) / p.accountThreshold), 20);
    return { delayMs: Math.min(p.failureDelayMs * 2 ** doublings, p.maxFailureDelayMs) };
  }

  /**
   * A successful login forgives the failures of this address for this account (it
   * knew the password). The address's failures for other accounts and the account's
   * failures from elsewhere stay: they are someone else's.
   */
  async recordSuccess(ip: string, account: string): Promise<void> {
    await this.redis.del(this.keys(ip, account).pairFail);
  }

  /** Lifts every lock and count of an account, from every address (administrator action). */
  async unlock(account: string): Promise<void> {
    const k = this.keys('', account);
    const a = accountKey(account);
    const prefix = this.redis.options.keyPrefix ?? '';
    const keys = [k.acctFail, k.acctRate];
    // SCAN sees the stored names: the prefix is added to the pattern and taken off the results
    const pattern = `${prefix}auth:*:ip-acct:* ${a.replace(/[*?[\]\\]/g, '\\$&')}`;
    let cursor = '0';
    do {
      const [next, found] = await this.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      for (const f of found) keys.push(f.slice(prefix.length));
      cursor = next;
    } while (cursor !== '0');
    await this.redis.del(...keys);
  }
}

/**
 * Counts a failure from an address for an account, each count's window starting again,
 * and locks the address (over all accounts) and the pair past their thresholds, a lock
 * doubling with every further failure. Allowed at maxmemory (see LoginGuard). KEYS: the
 * address's, the pair's and the account's counts, the address's and the pair's locks;
 * ARGV: the window (s), the address's and the pair's thresholds, the first and the
 * longest lock (s). The three counts.
 */
const RECORD_FAILURE = `#!lua flags=allow-oom
local counts = {}
for i = 1, 3 do
  counts[i] = redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
for i = 1, 2 do
  local over = counts[i] - tonumber(ARGV[i + 1])
  if over >= 0 then
    local secs = math.min(tonumber(ARGV[4]) * 2 ^ math.min(over, 20), tonumber(ARGV[5]))
    redis.call('SET', KEYS[i + 3], '1', 'EX', secs)
  end
end
return counts`;

/**
 * Takes one of the minute's attempts at an account under attack: 0 when taken, else the
 * milliseconds until the minute ends (nothing taken, so a refusal uses up nothing).
 * Allowed at maxmemory (see LoginGuard).
 */
const TAKE_ATTEMPT = `#!lua flags=allow-oom
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
  return math.max(redis.call('PTTL', KEYS[1]), 1)
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 60, 'NX')
return 0`;

/**
 * Runs a pipeline and returns its results, throwing the first error. `exec()` resolves
 * even when commands fail (a pair [error, result] each): taking only the results would
 * read a refused PTTL as "no lock" and a refused INCR as "no failure", letting every
 * guess through while Redis fails.
 */
export async function pipelineResults(pipeline: ChainableCommander): Promise<unknown[]> {
  const res = await pipeline.exec();
  if (!res) throw new Error('Redis pipeline discarded');
  return res.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}
