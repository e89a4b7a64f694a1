import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';

// `pnpm start` on a machine without the brokers: one line each, saying what to install.

const root = new URL('..', import.meta.url).pathname;

test('pnpm start without RabbitMQ and Redis names what to install and exits 1', { timeout: 60_000 }, () => {
  const r = spawnSync(process.execPath, ['scripts/start.mjs'], {
    cwd: root,
    env: { ...process.env, AMQP_URL: 'amqp://guest:secret@127.0.0.1:1', REDIS_URL: 'redis://127.0.0.1:1' },
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(r.status, 1, r.stderr);
  assert.equal(
    r.stderr,
    'mailyard: RabbitMQ is unreachable at amqp://guest:***@127.0.0.1:1 (install and start rabbitmq-server, or set AMQP_URL)\n' +
      'mailyard: Redis is unreachable at redis://127.0.0.1:1 (install and start redis-server, or set REDIS_URL)\n',
  );
});
