import assert from 'node:assert/strict';
import { test } from 'node:test';
import { commonSchema, loadConfig } from '@mailyard/config';
import { startTcpProxy } from '@mailyard/testkit';
import { z } from 'zod';
import { createRuntime } from '../src/index.js';

// A Redis that takes connections and never answers (hung, or a proxy in front of a dead
// one) must fail a command in time: every login, lookup and decision waits on one.
test(
  'a Redis that never answers fails the command within redis_command_timeout',
  { timeout: 30_000 },
  async () => {
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: 6379 });
    const config = loadConfig(z.object(commonSchema), {
      env: {},
      overrides: {
        redis_url: `redis://127.0.0.1:${proxy.port}`,
        redis_command_timeout: '500ms',
        http_port: 0,
        listen_address: '127.0.0.1',
        log_level: 'silent',
      },
    });
    const rt = await createRuntime('runtime-test', config);
    try {
      assert.equal(await rt.redis.ping(), 'PONG');
      proxy.hold();
      const started = Date.now();
      await assert.rejects(rt.redis.get('anything'), /timed out/i);
      assert.ok(Date.now() - started < 10_000, `failed after ${Date.now() - started} ms`);
    } finally {
      proxy.release();
      await rt.close();
      await proxy.close();
    }
  },
);
