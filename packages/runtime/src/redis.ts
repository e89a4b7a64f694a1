import type { Redis } from 'ioredis';

/**
 * SET of each of KEYS to ARGV[1], ARGV[2..] the options of SET (EX or PX, NX): how many
 * were set. Runs when Redis is at its maxmemory (allow-oom), as a plain SET would not.
 */
const SET_AT_MAXMEMORY = `#!lua flags=allow-oom
local set = 0
for _, k in ipairs(KEYS) do
  if redis.call('SET', k, ARGV[1], unpack(ARGV, 2)) then set = set + 1 end
end
return set`;

/** How long the record lives (seconds or milliseconds), and whether it is set only if absent. */
export type SetAtMaxmemoryOptions = ({ ex: number; px?: never } | { px: number; ex?: never }) & {
  nx?: boolean;
};

/**
 * Sets `key` (or each of `keys`, in one round trip) to `value` with an expiry, NX if
 * asked, even when Redis is at its maxmemory: for a small record that expires (a
 * marker of work done, a lock, a hint to other instances) whose refusal would cost more
 * than the few bytes it takes, such as work done twice or mail held until Redis has
 * room. Returns whether it was set (every one of `keys`; false with NX when one was
 * there). Any error of Redis is thrown.
 *
 * Sent as EVAL, as the scripts it replaces were: it keeps its place among the commands
 * sent beside it on the connection, where an EVALSHA that Redis answers NOSCRIPT (after a
 * restart) is sent again behind them.
 */
export async function setAtMaxmemory(
  redis: Redis,
  key: string | readonly string[],
  value: string,
  opts: SetAtMaxmemoryOptions,
): Promise<boolean> {
  const keys = typeof key === 'string' ? [key] : key;
  if (!keys.length) return true;
  const expiry = opts.px !== undefined ? ['PX', opts.px] : ['EX', opts.ex];
  const args = [...keys, value, ...expiry, ...(opts.nx ? ['NX'] : [])];
  return (await redis.eval(SET_AT_MAXMEMORY, keys.length, ...args)) === keys.length;
}

/**
 * Redis refused a command for want of memory (its maxmemory reached, no key it may evict).
 * Told by the error's name: a value import of ioredis here would load it in every
 * `mailyard` command at start.
 */
export function isOutOfMemory(err: unknown): boolean {
  return err instanceof Error && err.name === 'ReplyError' && err.message.startsWith('OOM ');
}
