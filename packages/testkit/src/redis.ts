import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export interface TestRedis {
  prefix: string;
  redis: Redis;
  /** Deletes every key under the prefix and disconnects. */
  cleanup(): Promise<void>;
}

/** A Redis client whose keys live under a prefix of their own. */
export function createTestRedis(): TestRedis {
  const prefix = `test:${randomBytes(4).toString('hex')}:`;
  const redis = new Redis(REDIS_URL, { keyPrefix: prefix });
  return {
    prefix,
    redis,
    async cleanup() {
      const plain = new Redis(REDIS_URL);
      let cursor = '0';
      do {
        const [next, keys] = await plain.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
        if (keys.length) await plain.del(...keys);
        cursor = next;
      } while (cursor !== '0');
      plain.disconnect();
      redis.disconnect();
    },
  };
}

/**
 * A real client of a Redis that is not there (nothing listens on port 1): every command
 * fails at once, as a backend outage does. Disconnect it when done.
 */
export function unreachableRedis(): Redis {
  const down = new Redis(1, '127.0.0.1', {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  down.on('error', () => undefined);
  return down;
}

/**
 * `redis` as it is, except that the first command for which `at` holds (its method name
 * and arguments, before the key prefix) is answered only once `meanwhile` has run to its
 * end: another operation then happens right after that command and before the rest of
 * the one using this client, an interleaving of two operations forced without timing.
 */
export function interleavedRedis(
  redis: Redis,
  at: (command: string, args: readonly unknown[]) => boolean,
  meanwhile: () => Promise<unknown>,
): Redis {
  let done = false;
  return new Proxy(redis, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        const res: unknown = (value as (...a: unknown[]) => unknown).apply(target, args);
        if (done || typeof prop !== 'string' || !at(prop, args)) return res;
        done = true;
        return (res as Promise<unknown>).then(async (answer) => {
          await meanwhile();
          return answer;
        });
      };
    },
  });
}
