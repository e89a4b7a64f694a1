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
