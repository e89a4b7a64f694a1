import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import { buildInfo, cachedCheck, createOpsServer, createRegistry } from '../src/index.js';

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

test(
  "Node's metrics under their standard names with a service label, and the build's version",
  { timeout: 10_000 },
  async () => {
    const registry = createRegistry('delivery', { version: '1.2.3', commit: 'abc123' });
    const text = await registry.metrics();
    assert.match(text, /^process_resident_memory_bytes\{service="delivery"\} \d+/m);
    assert.match(text, /^nodejs_heap_size_used_bytes\{service="delivery"\} \d+/m);
    assert.doesNotMatch(text, /^mailyard_delivery_process_/m, 'no per-service prefix');
    assert.match(text, /^mailyard_build_info\{service="delivery",version="1.2.3",commit="abc123"\} 1$/m);
    assert.deepEqual(buildInfo({ MAILYARD_VERSION: '2.0.0', MAILYARD_COMMIT: 'f00' }), {
      version: '2.0.0',
      commit: 'f00',
    });
    assert.deepEqual(buildInfo({}), { version: 'dev', commit: 'unknown' });
  },
);

test('/metrics says what /readyz says, one series per check', { timeout: 10_000 }, async () => {
  let redis = true;
  const registry = createRegistry('ready-metric-test');
  const ops = createOpsServer(registry, [{ name: 'redis', ok: () => redis }]);
  ops.addCheck({ name: 'hangs', ok: () => new Promise<boolean>(() => undefined) });
  const scrape = async () => (await ops.app.inject({ method: 'GET', url: '/metrics' })).body;
  let text = await scrape();
  assert.match(text, /^mailyard_readiness_check\{check="redis"\} 1$/m);
  assert.match(text, /^mailyard_readiness_check\{check="hangs"\} 0$/m);
  redis = false;
  text = await scrape();
  assert.match(text, /^mailyard_readiness_check\{check="redis"\} 0$/m);
  await ops.close();
});

test(
  'a request trickled to the ops port is answered 408 and closed within seconds',
  { timeout: 40_000 },
  async () => {
    const ops = createOpsServer(createRegistry('slow-client-test'), []);
    const port = await ops.listen(0, '127.0.0.1');
    const trickled = async (request: string) => {
      const s = connect(port, '127.0.0.1');
      const start = Date.now();
      let text = '';
      let i = 0;
      const timer = setInterval(() => i < request.length && s.write(request[i++]!), 200);
      s.on('data', (d: Buffer) => (text += d.toString()));
      await new Promise((resolve) => s.once('close', resolve));
      clearInterval(timer);
      return { text, ms: Date.now() - start };
    };
    // headers a byte at a time, and a body: without deadlines, 60 s and for ever
    const [headers, body] = await Promise.all([
      trickled(`GET /metrics HTTP/1.1\r\nHost: ops\r\nX-Slow: ${'a'.repeat(1000)}`),
      trickled(`POST /metrics HTTP/1.1\r\nHost: ops\r\nContent-Length: 1000\r\n\r\n${'a'.repeat(1000)}`),
    ]);
    for (const r of [headers, body]) {
      assert.match(r.text, /^HTTP\/1\.1 408 /);
      assert.ok(r.ms < 30_000, `closed after ${r.ms} ms`);
    }
    await ops.close();
  },
);
