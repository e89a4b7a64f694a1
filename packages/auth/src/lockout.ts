import type { Redis } from 'ioredis';

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
    const res = await this.redis.pipeline().pttl(k.ipLock).pttl(k.acctLock).exec();
    const ipTtl = Number(res?.[0]?.[1] ?? -2);
    const acctTtl = Number(res?.[1]?.[1] ?? -2);
    if (acctTtl > 0) return { locked: true, scope: 'account', retryAfterSeconds: Math.ceil(acctTtl / 1000) };
    if (ipTtl > 0) return { locked: true, scope: 'ip', retryAfterSeconds: Math.ceil(ipTtl / 1000) };
    return { locked: false };
  }

  async recordFailure(ip: string, account: string): Promise<void> {
    const k = this.keys(ip, account);
    const p = this.policy;
    const res = await this.redis
      .pipeline()
      .incr(k.ipFail)
      .expire(k.ipFail, p.windowSeconds)
      .incr(k.acctFail)
      .expire(k.acctFail, p.windowSeconds)
      .exec();
    const ipCount = Number(res?.[0]?.[1] ?? 0);
    const acctCount = Number(res?.[2]?.[1] ?? 0);
    const lockFor = (over: number) => Math.min(p.baseLockSeconds * 2 ** Math.min(over, 20), p.maxLockSeconds);
    const pipe = this.redis.pipeline();
    if (acctCount >= p.accountThreshold)
      pipe.set(k.acctLock, '1', 'EX', lockFor(acctCount - p.accountThreshold));
    if (ipCount >= p.ipThreshold) pipe.set(k.ipLock, '1', 'EX', lockFor(ipCount - p.ipThreshold));
    await pipe.exec();
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
