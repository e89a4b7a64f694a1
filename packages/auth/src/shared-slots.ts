import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { LocalSlots, type ConnectionSlots } from './client-limits.js';
import { redisAnswer } from './deadline.js';

// The slots of one key over every instance: a sorted set with a member per slot taken
// (`<process>:<n>`), scored by the end of its lease in ms of Redis's clock, so that the
// instances' own clocks never meet. Ended leases are dropped before counting: the slots
// of a process that died (SIGKILL, a lost host) free themselves. ARGV: max, lease, member.
//
// Both scripts run when Redis is at its maxmemory (allow-oom): a slot is a member of a few
// dozen bytes, one per open connection, and ended ones are dropped first. Refused, the
// count would fall back to each instance's own, and leases not refreshed would lapse while
// their connections stay open: the limit over all instances would stop holding just as
// Redis is under pressure. The flag says so; without a shebang Redis 7 checked memory
// only up to the first write, and the ZREMRANGEBYSCORE, even removing nothing, let the
// rest through, so these always ran (REFRESH, beginning with ZADD, did not).
const TAKE = `#!lua flags=allow-oom
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`;

// Every lease of one process extended by one lease from Redis's now. ARGV: the lease,
// then for each key its number of members and the members. A member is added when
// missing (taken while Redis failed, or lost with a Redis restart): it is a connection
// still open, and counts, even past the limit it was never checked against.
const REFRESH = `#!lua flags=allow-oom
local t = redis.call('TIME')
local ends = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local i = 2
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[i])
  for j = i + 1, i + n do redis.call('ZADD', key, ends, ARGV[j]) end
  redis.call('PEXPIRE', key, ARGV[1])
  i = i + n + 1
end
return #KEYS`;

interface SlotsRedis extends Redis {
  connectionSlotTake(key: string, max: number, leaseMs: number, member: string): Promise<number>;
  /** numkeys, the keys, then REFRESH's ARGV. */
  connectionSlotsRefresh(...args: (string | number)[]): Promise<number>;
}

function withSlotScripts(redis: Redis): SlotsRedis {
  const r = redis as SlotsRedis;
  if (typeof r.connectionSlotTake !== 'function') {
    redis.defineCommand('connectionSlotTake', { numberOfKeys: 1, lua: TAKE });
    redis.defineCommand('connectionSlotsRefresh', { lua: REFRESH });
  }
  return r;
}

export interface SharedSlotsOptions {
  redis: Redis;
  /** Counts are per service (`slots:<service>:<key>`), as the connection rate's. */
  service: string;
  /** This instance's own count, checked first: this process's, or its workers' primary. */
  local?: ConnectionSlots;
  /** How long a slot outlives the last refresh of the process holding it. */
  leaseMs?: number;
  /** How often a process extends the leases of the slots it holds. */
  refreshMs?: number;
  /** How long to wait for Redis before counting on this instance alone. */
  redisTimeoutMs?: number;
  /** A Redis failure, for the log (the limit still holds, counted on this instance). */
  onError?: (err: unknown) => void;
}

/** A slot this process holds: its member of the key's set, and whether Redis has it. */
interface Lease {
  member: string;
  stored: boolean;
}

/**
 * Connection slots counted over every instance in Redis, on top of the instance's own
 * count: a slot is a lease per connection, extended every `refreshMs` by the process
 * holding it, so that the slots of a process that dies without giving them back are
 * free again within `leaseMs`. One Redis round trip per slot taken, one per give (not
 * waited for), one per refresh for all of them.
 *
 * While Redis fails or takes longer than `redisTimeoutMs`, a take is checked against
 * the instance's count alone: the limit never turns into "allowed" nor into "refused
 * to everyone", and nothing waits on Redis. Such a slot is kept as a lease all the
 * same, which the next refresh that reaches Redis stores, so a long session opened
 * during a failure is counted by every instance once Redis is back.
 */
export class SharedSlots implements ConnectionSlots {
  private readonly local: ConnectionSlots;
  private readonly redis: SlotsRedis;
  private readonly leaseMs: number;
  private readonly refreshMs: number;
  private readonly timeoutMs: number;
  /** This process's leases per key. */
  private readonly leases = new Map<string, Lease[]>();
  /** Names this process's members: unique over every instance and restart. */
  private readonly holder = `${randomBytes(6).toString('hex')}-${process.pid}`;
  private taken = 0;
  private timer: NodeJS.Timeout | null = null;
  private refreshing = false;
  private closed = false;

  constructor(private readonly opts: SharedSlotsOptions) {
    this.local = opts.local ?? new LocalSlots();
    this.redis = withSlotScripts(opts.redis);
    this.leaseMs = opts.leaseMs ?? 30_000;
    this.refreshMs = opts.refreshMs ?? Math.max(10, Math.floor(this.leaseMs / 3));
    this.timeoutMs = opts.redisTimeoutMs ?? 500;
  }

  async take(key: string, max: number): Promise<boolean> {
    if (!(await this.local.take(key, max))) return false;
    // no limit: nothing to count over the instances
    if (!max) return true;
    const lease = { member: `${this.holder}:${++this.taken}`, stored: false };
    const taking = this.redis.connectionSlotTake(this.setKey(key), max, this.leaseMs, lease.member);
    try {
      if (!(await redisAnswer(taking, this.timeoutMs, 'the connection count'))) {
        this.local.give(key);
        return false;
      }
      lease.stored = true;
    } catch (err) {
      this.opts.onError?.(err);
      // taken in Redis after all when the answer was only late
      void taking.then(
        (ok) => {
          if (ok === 1) lease.stored = true;
        },
        () => undefined,
      );
    }
    this.hold(key, lease);
    return true;
  }

  give(key: string): void {
    this.local.give(key);
    const held = this.leases.get(key);
    const lease = held?.pop();
    if (!held?.length) this.leases.delete(key);
    if (!lease) return;
    // Sent after every command about this lease, on one connection. After a Redis
    // restart ioredis sends a script again as EVAL once Redis says NOSCRIPT, which may
    // land after this ZREM and bring the lease back until it ends (leaseMs). A lease
    // Redis never had is no loss when this fails; a stored one ends with its lease.
    this.redis.zrem(this.setKey(key), lease.member).catch((err: unknown) => {
      if (lease.stored) this.opts.onError?.(err);
    });
  }

  /** Stops refreshing (at shutdown, once every connection has given its slots). */
  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private setKey(key: string): string {
    return `slots:${this.opts.service}:${key}`;
  }

  private hold(key: string, lease: Lease): void {
    const held = this.leases.get(key);
    if (held) held.push(lease);
    else this.leases.set(key, [lease]);
    if (this.timer || this.closed) return;
    this.timer = setInterval(() => this.refresh(), this.refreshMs);
    this.timer.unref();
  }

  /** Extends every lease of this process in one round trip; one at a time. */
  private refresh(): void {
    if (this.refreshing || !this.leases.size) return;
    const keys: string[] = [];
    const args: (string | number)[] = [];
    const sent: Lease[] = [];
    for (const [key, held] of this.leases) {
      keys.push(this.setKey(key));
      args.push(held.length, ...held.map((l) => l.member));
      sent.push(...held);
    }
    this.refreshing = true;
    void redisAnswer(
      this.redis.connectionSlotsRefresh(keys.length, ...keys, this.leaseMs, ...args),
      this.timeoutMs,
      'the connection leases',
    )
      .then(
        () => {
          for (const l of sent) l.stored = true;
        },
        (err: unknown) => this.opts.onError?.(err),
      )
      .finally(() => (this.refreshing = false));
  }
}
