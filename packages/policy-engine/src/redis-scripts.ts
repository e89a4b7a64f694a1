import type { Redis } from 'ioredis';

// Each script is one Redis round trip that reads and updates a counter atomically,
// so instances sharing Redis never race each other.

/**
 * Sliding-window log: drop entries older than the window, refuse when `limit` are
 * left, else record this event. Returns -1 when allowed, else the current count.
 * KEYS[1] counter; ARGV now, window ms, limit, unique member.
 *
 * Runs when Redis is at its maxmemory (allow-oom): an event is a member of a few dozen
 * bytes, at most `limit` per counter, the old ones dropped first. Refused, every request
 * that check_rate counts would be deferred (the check's error is a 451): a full Redis
 * would stop the mail rather than keep limiting it. Without a shebang Redis 7 checked
 * memory only up to the first write, and the ZREMRANGEBYSCORE let the rest through: the
 * flag keeps that, said on purpose.
 */
const RATE = `#!lua flags=allow-oom
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[3]) then return n end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return -1
`;

/**
 * Greylisting. KEYS[1] triplet, KEYS[2] client network.
 * ARGV now, delay, pass ttl, retry window, auto-allow (1/0).
 * Returns {state, wait ms}: state 1 known triplet, 2 auto-allowed network, 3 passed
 * now (retried after the delay), 0 deferred, 4 a new triplet (deferred; the caller
 * stores it, see greylisting.ts).
 *
 * Runs when Redis is at its maxmemory (allow-oom): it only renews or rewrites a triplet
 * that is there, and notes the network of a client that retried after the delay, as
 * real mail servers do. Refused, a sender greylisted before Redis filled up would be
 * deferred on every retry until Redis had room. A new triplet, which any client can
 * make up by the thousand, is not stored here but by the caller with a command Redis
 * refuses at maxmemory.
 */
const GREYLIST = `#!lua flags=allow-oom
local now = tonumber(ARGV[1])
local delay = tonumber(ARGV[2])
local passTtl = tonumber(ARGV[3])
local v = redis.call('GET', KEYS[1])
if v == 'pass' then
  redis.call('PEXPIRE', KEYS[1], passTtl)
  return {1, 0}
end
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return {2, 0} end
if not v then return {4, delay} end
local first = tonumber(v)
if now - first >= delay then
  redis.call('SET', KEYS[1], 'pass', 'PX', passTtl)
  redis.call('SET', KEYS[2], '1', 'PX', passTtl)
  return {3, 0}
end
return {0, delay - (now - first)}
`;

export interface PolicyRedis extends Redis {
  policyRate(key: string, now: number, windowMs: number, limit: number, member: string): Promise<number>;
  policyGreylist(
    triplet: string,
    client: string,
    now: number,
    delay: number,
    passTtl: number,
    retryWindow: number,
    autoAllow: '0' | '1',
  ): Promise<[number, number]>;
}

export function withPolicyScripts(redis: Redis): PolicyRedis {
  const r = redis as PolicyRedis;
  if (typeof r.policyRate !== 'function') {
    redis.defineCommand('policyRate', { numberOfKeys: 1, lua: RATE });
    redis.defineCommand('policyGreylist', { numberOfKeys: 2, lua: GREYLIST });
  }
  return r;
}
