import type { ChainableCommander, Redis } from 'ioredis';

export interface LockoutPolicy {
  /** Failures per account within the window before it is locked. */
  accountThreshold: number;
  /** Failures per client IP within the window before it is locked. */
  ipThreshold: number;
  /** Failures are forgotten after this many seconds without a new one. */
  windowSeconds: number;
  /** First lock duration; each further failure while over the threshold doubles it. */
  baseLockSeconds: number;
  maxLockSeconds: number;
}

export const DEFAULT_LOCKOUT: LockoutPolicy = {
  accountThreshold: 5,
  ipThreshold: 20,
  windowSeconds: 15 * 60,
  baseLockSeconds: 30,
  maxLockSeconds: 3600,
};

export type LockState =
  { locked: false } | { locked: true; scope: 'ip' | 'account'; retryAfterSeconds: number };

/**
 * Failed-login counting shared by every service (SMTP submission, IMAP, POP3, webmail)
 * through Redis: per client IP and per account, with lockouts that grow while the
 * failures go on (Dovecot's auth penalty and fail2ban, in one place).
 */
export class LoginGuard {
  constructor(
    private readonly redis: Redis,
    private readonly policy: LockoutPolicy = DEFAULT_LOCKOUT,
  ) {}

  private keys(ip: string, account: string) {
    const a = account.trim().toLowerCase();
    return {
      ipFail: `auth:fail:ip:${ip}`,
      acctFail: `auth:fail:acct:${a}`,
      ipLock: `auth:lock:ip:${ip}`,
      acctLock: `auth:lock:acct:${a}`,
    };
  }

  async check(ip: string, account: string): Promise<LockState> {
    const k = this.keys(ip, account);
    const [ipTtl = -2, acctTtl = -2] = (
      await pipelineResults(this.redis.pipeline().pttl(k.ipLock).pttl(k.acctLock))
    ).map(Number);
    if (acctTtl > 0) return { locked: true, scope: 'account', retryAfterSeconds: Math.ceil(acctTtl / 1000) };
    if (ipTtl > 0) return { locked: true, scope: 'ip', retryAfterSeconds: Math.ceil(ipTtl / 1000) };
    return { locked: false };
  }

  async recordFailure(ip: string, account: string): Promise<void> {
    const k = this.keys(ip, account);
    const p = this.policy;
    const res = await pipelineResults(
      this.redis
        .pipeline()
        .incr(k.ipFail)
        .expire(k.ipFail, p.windowSeconds)
        .incr(k.acctFail)
        .expire(k.acctFail, p.windowSeconds),
    );
    const ipCount = Number(res[0]);
    const acctCount = Number(res[2]);
    const lockFor = (over: number) => Math.min(p.baseLockSeconds * 2 ** Math.min(over, 20), p.maxLockSeconds);
    const pipe = this.redis.pipeline();
    if (acctCount >= p.accountThreshold)
      pipe.set(k.acctLock, '1', 'EX', lockFor(acctCount - p.accountThreshold));
    if (ipCount >= p.ipThreshold) pipe.set(k.ipLock, '1', 'EX', lockFor(ipCount - p.ipThreshold));
    await pipelineResults(pipe);
  }

  /** A successful login clears the account's failure count (not the IP's). */
  async recordSuccess(ip: string, account: string): Promise<void> {
    await this.redis.del(this.keys(ip, account).acctFail);
  }

  /** Lifts the locks of an account (administrator action). */
  async unlock(account: string): Promise<void> {
    const k = this.keys('', account);
    await this.redis.del(k.acctFail, k.acctLock);
  }
}

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
