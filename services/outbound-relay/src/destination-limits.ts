import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { setAtMaxmemory } from '@mailyard/runtime/redis';

// A counting semaphore per destination in Redis, shared by every instance. Each holder
// is a member of a sorted set scored by its lease expiry, so the slots of an instance
// that died (SIGKILL, lost host) free themselves when the lease runs out; a live
// holder renews its lease while the delivery runs.
//
// Every script here runs when Redis is at its maxmemory (allow-oom): a slot is a token per
// delivery running (at most `concurrency` per destination, ended leases dropped first), a
// rate counter one small key per destination and minute. Refused, acquire() fails and
// every message is deferred (4.4.5): a full Redis would stop all outbound mail. Without
// a shebang Redis 7 checked memory only up to the first write: ACQUIRE, beginning with
// ZREMRANGEBYSCORE, always ran, RATE (INCR) was refused.
//
// A slot and the rate budget are taken together (KEYS[2], ARGV[5] a minute; 0: no rate):
// a message that finds every slot busy takes none of the budget, so the messages polling
// for a slot do not use up the minute's budget between them while the few holders send.
const ACQUIRE = `#!lua flags=allow-oom
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
local rate = tonumber(ARGV[5])
if rate > 0 then
  if tonumber(redis.call('GET', KEYS[2]) or '0') >= rate then return 0 end
  if redis.call('INCR', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], 120000) end
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`;

// Fixed one-minute windows: simple, shared, and good enough to keep a burst from
// tripping a receiver's own rate limits.
const RATE = `#!lua flags=allow-oom
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], 120000) end
if n > tonumber(ARGV[1]) then return 0 end
return 1`;

// A holder's lease extended by one lease, the key's expiry with it (a slot held longer than
// one lease, by a reused session, must not vanish with the key). XX: a lease that already
// ended and was dropped is not brought back past a limit another holder was counted
// against. Allowed at maxmemory like ACQUIRE, and it only rewrites a member that is there:
// refused (as a MULTI with ZADD was), the leases of long deliveries ended while Redis was
// full and other instances opened more connections to the destination than its limit.
// KEYS[1] the slots; ARGV: lease end, lease ms, token.
const RENEW = `#!lua flags=allow-oom
redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`;

export interface DestinationLimitsOptions {
  concurrency: number;
  /** Messages per minute per destination; 0 = unlimited. */
  ratePerMinute: number;
  leaseMs?: number;
}

export class DestinationLimits {
  private readonly leaseMs: number;
  /** Local waiters per destination, woken when a slot of this instance is released. */
  private readonly waiting = new Map<string, Set<() => void>>();
  /**
   * Messages of this instance inside acquire() per destination, from its first line: a
   * waiter is also between polls, and its first attempt is in flight before it has
   * told anyone it waits.
   */
  private readonly wanting = new Map<string, number>();
  constructor(
    private readonly redis: Redis,
    private readonly opts: DestinationLimitsOptions,
  ) {
    this.leaseMs = opts.leaseMs ?? 60_000;
  }

  /**
   * Waits for a slot of `destination` (and its rate budget) until `deadline`; returns
   * the release function, or null when none came free in time.
   */
  async acquire(destination: string, deadline: number): Promise<(() => Promise<void>) | null> {
    this.wanting.set(destination, (this.wanting.get(destination) ?? 0) + 1);
    try {
      return await this.waitForSlot(destination, deadline);
    } finally {
      const n = this.wanting.get(destination)! - 1;
      if (n) this.wanting.set(destination, n);
      else this.wanting.delete(destination);
    }
  }

  private async waitForSlot(destination: string, deadline: number): Promise<(() => Promise<void>) | null> {
    const token = randomBytes(8).toString('hex');
    const slotKey = `outbound:slots:${destination}`;
    let wait = 20;
    for (;;) {
      const got = await this.redis.eval(
        ACQUIRE,
        2,
        slotKey,
        this.rateKey(destination),
        Date.now(),
        this.leaseMs,
        this.opts.concurrency,
        token,
        this.opts.ratePerMinute,
      );
      if (got === 1) return this.holder(destination, slotKey, token);
      // tells every instance that this destination has mail waiting for a slot for a second
      // more, so that none keeps an idle session (and its slot) parked meanwhile. Set at
      // maxmemory too: one small key per destination, expiring within a second. Refused (a
      // plain SET), the sessions of other instances went on being parked while Redis was
      // full, each keeping its slot for the idle limit, and the waiting mail was deferred
      // as "destination busy".
      setAtMaxmemory(this.redis, `outbound:slotwait:${destination}`, '1', { px: 1000 }).catch(
        () => undefined,
      );
      if (Date.now() + wait > deadline) return null;
      // woken at once by a release in this process; slots freed by other instances are
      // found by polling
      await new Promise<void>((resolve) => {
        const set = this.waiting.get(destination) ?? new Set();
        this.waiting.set(destination, set);
        const wake = () => {
          clearTimeout(timer);
          set.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, wait + Math.random() * wait);
        set.add(wake);
      });
      wait = Math.min(wait * 2, 200);
    }
  }

  /**
   * Whether a message of any instance waits for a slot of `destination` (an idle session
   * must then give its slot up rather than be parked).
   */
  async contended(destination: string): Promise<boolean> {
    if (this.waitingHere(destination)) return true;
    return (await this.redis.exists(`outbound:slotwait:${destination}`)) === 1;
  }

  /** Whether a message of this instance waits for a slot of `destination`, now (no I/O). */
  waitingHere(destination: string): boolean {
    return this.wanting.has(destination);
  }

  /** Waits for the rate budget alone, for a message that reuses a session and so already has a slot. */
  async rateWait(destination: string, deadline: number): Promise<boolean> {
    for (let wait = 20; ; wait = Math.min(wait * 2, 200)) {
      if (await this.rateAllows(destination)) return true;
      if (Date.now() + wait > deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, wait + Math.random() * wait));
    }
  }

  /** The rate counter of `destination` for the current minute. */
  private rateKey(destination: string): string {
    return `outbound:rate:${destination}:${Math.floor(Date.now() / 60_000)}`;
  }

  private async rateAllows(destination: string): Promise<boolean> {
    if (!this.opts.ratePerMinute) return true;
    const ok = await this.redis.eval(RATE, 1, this.rateKey(destination), this.opts.ratePerMinute);
    return ok === 1;
  }

  private holder(destination: string, slotKey: string, token: string): () => Promise<void> {
    const renew = setInterval(
      () => {
        this.redis
          .eval(RENEW, 1, slotKey, Date.now() + this.leaseMs, this.leaseMs, token)
          .catch(() => undefined);
      },
      Math.max(this.leaseMs / 3, 10),
    );
    renew.unref();
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      clearInterval(renew);
      await this.redis.zrem(slotKey, token).catch(() => undefined);
      const next = this.waiting.get(destination)?.values().next();
      if (next && !next.done) next.value();
      if (!this.waiting.get(destination)?.size) this.waiting.delete(destination);
    };
  }
}
