import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cachedCheck, createOpsServer, createRegistry } from '../src/index.js';

test('/readyz names every failing check: false, thrown, or too slow', { timeout: 10_000 }, async () => {
  const ops = createOpsServer(createRegistry('ready-test'), [{ name: 'sync', ok: () => true }]);
  ops.addCheck({ name: 'async', ok: async () => true });
  ops.addCheck({ name: 'down', ok: async () => false });
  ops.addCheck({
    name: 'throws',
    ok: async () => {
      throw new Error('broker gone');
    },
  });
  ops.addCheck({ name: 'hangs', ok: () => new Promise<boolean>(() => undefined) });
  const res = await ops.app.inject({ method: 'GET', url: '/readyz' });
  assert.equal(res.statusCode, 503);
  assert.deepEqual(res.json(), { status: 'not ready', failing: ['down', 'throws', 'hangs'] });
  await ops.close();
});

test('cachedCheck asks once per period, whatever the answer', { timeout: 10_000 }, async () => {
  let asked = 0;
  let answer = false;
  let now = 1_000;
  const check = cachedCheck(
    1500,
    async () => {
      asked++;
      return answer;
    },
    () => now,
  );
  assert.equal(await check(), false);
  answer = true;
  now += 1000;
  assert.equal(await check(), false, 'the cached answer within the period');
  assert.equal(asked, 1);
  now += 600;
  assert.equal(await check(), true);
  assert.equal(asked, 2);
});
