import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { reverseName, startDnsServer, type TestDnsServer } from '@mailyard/testkit';
import { createResolver, type DnsCacheOptions, type MailResolver } from '../src/index.js';

// The in-process cache against a real DNS server on loopback: TTLs and negative TTLs
// honoured, failures never kept, answers in node:dns's shapes.

const T = { timeout: 30_000 };
let dns: TestDnsServer;
/** The same zone without SOA in negative answers: nothing negative may be kept. */
let plain: TestDnsServer;
const clock = { now: Date.parse('2026-01-01T00:00:00Z') };
const ZONE = {
  'example.test': {
    MX: [{ priority: 10, exchange: 'mx.example.test' }],
    TXT: ['v=spf1 -all', 'x'.repeat(300)],
  },
  'mx.example.test': { A: ['192.0.2.25'], AAAA: ['2001:db8::25'] },
  [reverseName('192.0.2.25')]: { PTR: ['mx.example.test'] },
  'broken.test': { SERVFAIL: true },
  'dead.test': { TIMEOUT: true },
};

before(async () => {
  dns = await startDnsServer(ZONE, { ttl: 60, negativeTtl: 30 });
  plain = await startDnsServer(ZONE, { ttl: 60 });
});
after(async () => {
  await dns.close();
  await plain.close();
});

// the server answers from this process: one that a busy machine keeps waiting past the
// timeout would see its answer read after the timeout fired
const resolverOn = (server: TestDnsServer, cache: DnsCacheOptions | false = {}) =>
  createResolver({
    servers: [server.address],
    timeoutMs: 2000,
    tries: 1,
    cache: cache === false ? false : { now: () => clock.now, ...cache },
  });
const asked = (server: TestDnsServer, name: string, type: string) =>
  server.queries.filter((q) => q.name === name && q.type === type).length;
const code = (p: Promise<unknown>) =>
  p.then(
    () => 'answered',
    (err: NodeJS.ErrnoException) => err.code,
  );

describe('answers in the shapes of node:dns', () => {
  test('MX, A, AAAA, TXT (each record its strings) and PTR, as node:dns gives them', T, async () => {
    const r = resolverOn(dns);
    for (const [ours, theirs] of [
      [r.resolveMx('example.test'), r.raw.resolveMx('example.test')],
      [r.resolve4('mx.example.test'), r.raw.resolve4('mx.example.test')],
      [r.resolve6('mx.example.test'), r.raw.resolve6('mx.example.test')],
      [r.resolveTxt('example.test'), r.raw.resolveTxt('example.test')],
      [r.reverse('192.0.2.25'), r.raw.reverse('192.0.2.25')],
      [r.resolve('example.test', 'TXT'), r.raw.resolve('example.test', 'TXT')],
    ] as const)
      assert.deepEqual(await ours, await theirs);
  });

  test('no name is ENOTFOUND, no record of the type ENODATA, as node:dns says it', T, async () => {
    const r = resolverOn(dns);
    assert.equal(await code(r.resolve4('nowhere.test')), 'ENOTFOUND');
    assert.equal(await code(r.resolve4('example.test')), 'ENODATA');
    assert.equal(await code(r.reverse('192.0.2.99')), 'ENOTFOUND');
  });

  test('a name ending in a dot, or in capitals, is the same name, asked once', T, async () => {
    const r = resolverOn(dns);
    const before = asked(dns, 'example.test', 'MX');
    for (const mx of ['example.test.', 'Example.TEST.', 'example.test'])
      assert.deepEqual(await r.resolveMx(mx), [{ exchange: 'mx.example.test', priority: 10 }], mx);
    assert.equal(asked(dns, 'example.test', 'MX'), before + 1);
    assert.equal(await code(r.resolve4('nowhere.test.')), 'ENOTFOUND');
    const u = resolverOn(dns, false);
    assert.deepEqual(await u.resolve4('mx.example.test.'), ['192.0.2.25'], 'uncached too');
  });

  test('a broken server is a failure, never "no name" (PTR included)', T, async () => {
    const r = resolverOn(dns);
    assert.equal(await code(r.resolve4('broken.test')), 'ESERVFAIL');
    dns.set(reverseName('192.0.2.66'), { SERVFAIL: true });
    assert.equal(await code(r.reverse('192.0.2.66')), 'ESERVFAIL');
    assert.equal(await code(r.resolve4('dead.test')), 'ETIMEOUT');
  });
});

describe('what is kept, and how long', () => {
  test('an answer is kept for its TTL, then asked again', T, async () => {
    const r = resolverOn(dns);
    const before = asked(dns, 'example.test', 'MX');
    for (let i = 0; i < 5; i++) await r.resolveMx('example.test');
    assert.equal(asked(dns, 'example.test', 'MX'), before + 1);
    clock.now += 59_000;
    await r.resolveMx('example.test');
    assert.equal(asked(dns, 'example.test', 'MX'), before + 1, 'still within the 60 s TTL');
    clock.now += 2000;
    await r.resolveMx('example.test');
    assert.equal(asked(dns, 'example.test', 'MX'), before + 2, 'asked again once the TTL ran out');
  });

  test("a negative answer is kept for the SOA's negative TTL, and only with an SOA", T, async () => {
    const r = resolverOn(dns);
    const q = 'missing.example.test';
    for (let i = 0; i < 3; i++) assert.equal(await code(r.resolve4(q)), 'ENOTFOUND');
    assert.equal(asked(dns, q, 'A'), 1);
    clock.now += 31_000;
    assert.equal(await code(r.resolve4(q)), 'ENOTFOUND');
    assert.equal(asked(dns, q, 'A'), 2, 'asked again after the negative TTL');

    const p = resolverOn(plain);
    for (let i = 0; i < 3; i++) assert.equal(await code(p.resolve4(q)), 'ENOTFOUND');
    assert.equal(asked(plain, q, 'A'), 3, 'without an SOA a negative answer is not kept (RFC 2308 §5)');
    plain.set(q, { A: ['192.0.2.7'] });
    assert.deepEqual(await p.resolve4(q), ['192.0.2.7'], 'a name added later is found at once');
  });

  test('failures are never kept', T, async () => {
    const r = resolverOn(dns);
    for (let i = 0; i < 2; i++) assert.equal(await code(r.resolveTxt('broken.test')), 'ESERVFAIL');
    assert.equal(asked(dns, 'broken.test', 'TXT'), 2);
  });

  test('the same question asked at once goes out once', T, async () => {
    const r = resolverOn(dns);
    const before = asked(dns, 'mx.example.test', 'AAAA');
    const all = await Promise.all(Array.from({ length: 20 }, () => r.resolve6('mx.example.test')));
    assert.equal(asked(dns, 'mx.example.test', 'AAAA'), before + 1);
    for (const a of all) assert.deepEqual(a, ['2001:db8::25']);
  });

  test('callers get copies: changing one changes nothing kept', T, async () => {
    const r = resolverOn(dns);
    const mx = await r.resolveMx('example.test');
    mx[0]!.exchange = 'evil.test';
    mx.push({ exchange: 'more.test', priority: 1 });
    assert.deepEqual(await r.resolveMx('example.test'), [{ exchange: 'mx.example.test', priority: 10 }]);
  });

  test('at most maxEntries answers are kept, the least recently used going first', T, async () => {
    const r: MailResolver = resolverOn(dns, { maxEntries: 1 });
    const before = asked(dns, 'example.test', 'TXT');
    await r.resolveTxt('example.test');
    await r.resolve4('mx.example.test');
    await r.resolveTxt('example.test');
    assert.equal(asked(dns, 'example.test', 'TXT'), before + 2);
  });

  test('cache: false asks every time', T, async () => {
    const r = resolverOn(dns, false);
    const before = asked(dns, 'mx.example.test', 'A');
    for (let i = 0; i < 3; i++) await r.resolve4('mx.example.test');
    assert.equal(asked(dns, 'mx.example.test', 'A'), before + 3);
  });
});
