import { Redis } from 'ioredis';
import { tempDir } from './files.js';
import { startRestartable, type Restartable } from './restartable.js';
import { freePort } from './ports.js';

/**
 * A redis-server of the test's own, for fault tests that stop it (never the shared one).
 * Its data lives in a temporary directory as an append-only file fsynced on every write,
 * so a kill and a start again is the blip of a production Redis with persistence: the
 * directory is back, nothing acknowledged is lost.
 */
export interface PrivateRedis extends Restartable {
  port: number;
  url: string;
  /** A client of its own, errors swallowed (disconnected by close()). */
  client(opts?: { keyPrefix?: string }): Redis;
  /**
   * Makes the server answer the named commands (or ACL categories, `@write`) with an
   * error (NOPERM), on connections already open too: Redis up but failing some
   * commands, as it does while it loads its dataset (LOADING) or refuses writes
   * (MISCONF, READONLY).
   */
  refuse(commands: string[]): Promise<void>;
  /**
   * Runs `work` while the server is at its maxmemory (noeviction): every command that
   * needs memory is refused with OOM, reads still work. Checked full before `work`
   * starts; the limit is lifted after it, whatever it did.
   */
  whileFull<T>(work: () => Promise<T>): Promise<T>;
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
  const url = `redis://127.0.0.1:${port}`;
  const clients: Redis[] = [];
  const client = (opts: { keyPrefix?: string } = {}) => {
    const c = new Redis(url, { ...opts, maxRetriesPerRequest: 1 });
    c.on('error', () => undefined);
    clients.push(c);
    return c;
  };
  return {
    ...server,
    port,
    url,
    client,
    async refuse(commands) {
      const admin = client();
      try {
        await admin.call('ACL', 'SETUSER', 'default', ...commands.map((c) => `-${c}`));
      } finally {
        admin.disconnect();
      }
    },
    async whileFull(work) {
      const admin = client();
      try {
        await admin.config('SET', 'maxmemory-policy', 'noeviction');
        await admin.config('SET', 'maxmemory', '1');
        const probe = await admin.set('mailyard:full-probe', '1').then(
          () => null,
          (err: Error) => err,
        );
        if (!probe?.message.startsWith('OOM ')) throw new Error(`Redis took a write at maxmemory: ${probe}`);
        return await work();
      } finally {
        await admin.config('SET', 'maxmemory', '0');
        admin.disconnect();
      }
    },
    async close() {
      for (const c of clients) c.disconnect();
      await server.close();
    },
  };
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
