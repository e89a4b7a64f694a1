import { Redis } from 'ioredis';
import { tempDir } from './files.js';
import { startRestartable, type Restartable } from './restartable.js';
import { freePort } from './scanners.js';

/**
 * A redis-server of the test's own, for fault tests that stop it (never the shared one).
 * Its data lives in a temporary directory as an append-only file fsynced on every write,
 * so a kill and a start again is the blip of a production Redis with persistence: the
 * directory is back, nothing acknowledged is lost.
 */
export interface PrivateRedis extends Restartable {
  port: number;
  url: string;
}

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort();
  const dir = tempDir('mailyard-redis-');
  const server = await startRestartable({
    name: `redis-server on port ${port}`,
    command: 'redis-server',
    args: [
      ...['--port', String(port), '--bind', '127.0.0.1', '--dir', dir.path, '--save', ''],
      ...['--appendonly', 'yes', '--appendfsync', 'always'],
    ],
    readyTimeoutMs: 20_000,
    cleanup: () => dir.cleanup(),
    async ready() {
      const probe = new Redis(port, '127.0.0.1', {
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      probe.on('error', () => undefined);
      try {
        await probe.connect();
        // PING answers LOADING while the append-only file is read back
        return (await probe.ping()) === 'PONG';
      } finally {
        probe.disconnect();
      }
    },
  });
  return { ...server, port, url: `redis://127.0.0.1:${port}` };
}

/**
 * The boot settings of a service built in a test's process against a given broker and
 * Redis (port 0 for metrics, loopback, quiet unless TEST_LOG_LEVEL says otherwise).
 */
export function testBootSettings(amqpUrl: string, redisUrl: string): Record<string, unknown> {
  return {
    amqp_url: amqpUrl,
    redis_url: redisUrl,
    http_port: 0,
    listen_address: '127.0.0.1',
    log_level: process.env.TEST_LOG_LEVEL ?? 'silent',
    myhostname: 'mx.example.test',
  };
}
