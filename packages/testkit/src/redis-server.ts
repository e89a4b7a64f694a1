import { spawn } from 'node:child_process';
import { Redis } from 'ioredis';
import { freePort } from './scanners.js';
import { waitFor } from './wait.js';

export interface PrivateRedis {
  url: string;
  /** A client of its own (closed by stop()). */
  client(opts?: { keyPrefix?: string }): Redis;
  /**
   * Makes the server answer the named commands (or ACL categories, `@write`) with an
   * error (NOPERM), on connections already open too: Redis up but failing some
   * commands, as it does while it loads its dataset (LOADING) or refuses writes
   * (MISCONF, READONLY).
   */
  refuse(commands: string[]): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A redis-server of the test's own on a free loopback port, without persistence, for
 * tests that make Redis fail. The shared Redis is never changed.
 */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort();
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  const url = `redis://127.0.0.1:${port}`;
  const clients: Redis[] = [];
  // retried by ioredis until the server listens
  const admin = new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: () => 50 });
  // refused connections while the server starts, and its going away at stop()
  admin.on('error', () => undefined);
  await waitFor(() => admin.status === 'ready', { what: `redis-server on port ${port}`, timeoutMs: 30_000 });
  return {
    url,
    client(opts = {}) {
      const c = new Redis(url, { ...opts, maxRetriesPerRequest: 1 });
      c.on('error', () => undefined);
      clients.push(c);
      return c;
    },
    async refuse(commands) {
      await admin.call('ACL', 'SETUSER', 'default', ...commands.map((c) => `-${c}`));
    },
    async stop() {
      for (const c of clients) c.disconnect();
      admin.disconnect();
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((r) => child.once('exit', () => r()));
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}
