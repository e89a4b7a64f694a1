import { within } from '@mailyard/config';

/**
 * `p`, or an error once `ms` have passed without its answer: a limit counted in Redis
 * must not hold a connection while Redis is slow or unreachable, so the caller counts in
 * its own process instead. The command itself goes on; its late failure is ignored.
 */
export function redisAnswer<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return within(p, ms, () => new Error(`Redis did not answer ${what} in time`));
}
