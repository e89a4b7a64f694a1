/**
 * `p`, or an error once `ms` have passed without its answer: a limit counted in Redis
 * must not hold a connection while Redis is slow or unreachable (ioredis queues
 * commands until it reconnects), so the caller counts in its own process instead. The
 * command itself goes on; its late failure is ignored.
 */
export function redisAnswer<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis did not answer ${what} in time`)), ms);
  });
  p.catch(() => undefined);
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
