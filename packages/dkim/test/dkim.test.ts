import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { after, before, test } from 'node:test';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { createTestRedis, startDnsServer, type TestDnsServer, type TestRedis } from '@mailyard/testkit';
import { DkimKeyStore, DkimSigner, dnsRecord, generateDkimKey } from '../src/index.js';

let r: TestRedis;
let dns: TestDnsServer;
before(async () => {
  r = createTestRedis();
  dns = await startDnsServer({});
});
after(async () => {
  await dns.close();
  await r.cleanup();
});

const message = Buffer.from(
  'From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\nSubject: signed\r\n' +
    'Date: Fri, 27 Nov 2026 20:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n\r\nHello\r\n',
);

function verifier() {
  const res = new Resolver();
  res.setServers([dns.address]);
  return (name: string, type: string) => res.resolve(name, type) as Promise<string[][]>;
}

function publish(domain: string, selector: string, key: { algorithm: 'rsa' | 'ed25519'; publicKey: string }) {
  const rec = dnsRecord(domain, selector, key);
  dns.set(rec.name, { TXT: [rec.value] });
}

test('rsa-sha256 and ed25519-sha256 signatures verify with mailauth', async () => {
  const store = new DkimKeyStore(r.redis);
  const rsa = await store.add('example.test', 'rsa1', generateDkimKey('rsa'));
  const ed = await store.add('Example.TEST', 'ed1', generateDkimKey('ed25519'));
  publish(rsa.domain, rsa.selector, rsa);
  publish(ed.domain, ed.selector, ed);
  const signed = await new DkimSigner(store).sign(message, 'example.test');
  assert.deepEqual(signed.errors, []);
  assert.deepEqual(
    signed.signatures.map((s) => s.algorithm),
    ['rsa-sha256', 'ed25519-sha256'],
  );
  const result = await dkimVerify(Buffer.concat([Buffer.from(signed.headers), message]), {
    resolver: verifier(),
  });
  assert.equal(result.results.length, 2, JSON.stringify(result.results));
  for (const x of result.results) assert.equal(x.status.result, 'pass', JSON.stringify(x.status));
  assert.deepEqual(result.results.map((x) => x.selector).sort(), ['ed1', 'rsa1']);
});

test('a tampered body fails verification', async () => {
  const signed = await new DkimSigner(new DkimKeyStore(r.redis)).sign(message, 'example.test');
  const tampered = Buffer.concat([
    Buffer.from(signed.headers),
    Buffer.from(message.toString().replace('Hello', 'Hullo')),
  ]);
  const result = await dkimVerify(tampered, { resolver: verifier() });
  assert.equal(result.results.length, 2);
  for (const x of result.results) assert.notEqual(x.status.result, 'pass');
});

test('a domain without keys is not signed; the newest key per algorithm is used', async () => {
  const store = new DkimKeyStore(r.redis);
  const none = await new DkimSigner(store).sign(message, 'other.test');
  assert.equal(none.headers, '');
  const k1 = await store.add('rot.test', 'a', {
    ...generateDkimKey('ed25519'),
    created: '2026-01-01T00:00:00.000Z',
  });
  const k2 = await store.add('rot.test', 'b', {
    ...generateDkimKey('ed25519'),
    created: '2026-06-01T00:00:00.000Z',
  });
  assert.deepEqual(
    (await store.signingKeys('rot.test')).map((k) => k.selector),
    [k2.selector],
  );
  assert.notEqual(k1.selector, k2.selector);
  await assert.rejects(store.add('rot.test', 'b', generateDkimKey('ed25519')), /already exists/);
  await assert.rejects(
    store.add('rot.test', 'bad_selector', generateDkimKey('ed25519')),
    /not a valid selector/,
  );
});

test('a key deleted while it is being activated stays deleted', async () => {
  const base = new DkimKeyStore(r.redis);
  await base.add('race.test', 'old', { ...generateDkimKey('ed25519'), created: '2026-01-01T00:00:00.000Z' });
  const waiting = { ...generateDkimKey('ed25519'), pending: true };
  await base.add('race.test', 'new', waiting, { pending: true });
  assert.deepEqual(
    (await base.list('race.test')).map((k) => [k.selector, !!k.pending]),
    [
      ['old', false],
      ['new', true],
    ],
  );
  // another administrator's delete lands just before activate writes
  let armed = true;
  const racing = new Proxy(r.redis, {
    get(target, prop) {
      const v: unknown = Reflect.get(target, prop, target);
      if (typeof v !== 'function' || (prop !== 'hset' && prop !== 'eval')) return v;
      return async (...args: unknown[]) => {
        if (armed) {
          armed = false;
          await base.remove('race.test', 'new');
        }
        return (v as (...a: unknown[]) => Promise<unknown>).apply(target, args);
      };
    },
  });
  await assert.rejects(
    new DkimKeyStore(racing).activate('race.test', 'new'),
    /^DkimError: no DKIM key with selector new for race\.test$/,
  );
  assert.equal(await base.get('race.test', 'new'), null);
  assert.deepEqual(
    (await base.signingKeys('race.test')).map((k) => k.selector),
    ['old'],
  );
  await base.remove('race.test', 'old');
  assert.equal(await r.redis.sismember('dkim:domains', 'race.test'), 0);
});

test('a From, Subject or Reply-To added after signing breaks the signature; a list header does not', async () => {
  const store = new DkimKeyStore(r.redis);
  const key = await store.add('oversign.test', 'o1', generateDkimKey('ed25519'));
  publish(key.domain, key.selector, key);
  const original = Buffer.from(message.toString().replaceAll('example.test', 'oversign.test'));
  const signed = await new DkimSigner(store).sign(original, 'oversign.test');
  const verdict = async (added: string) => {
    // a field put in front of the others, as a relay on the way would prepend it
    const res = await dkimVerify(Buffer.concat([Buffer.from(added + signed.headers), original]), {
      resolver: verifier(),
    });
    return res.results.map((x) => x.status.result).join(',');
  };
  assert.equal(await verdict(''), 'pass');
  assert.equal(await verdict('List-Id: <team.lists.oversign.test>\r\n'), 'pass');
  for (const field of [
    'From: Mallory <boss@oversign.test>\r\n',
    'Subject: urgent: pay this invoice\r\n',
    'Reply-To: mallory@elsewhere.test\r\n',
    'Cc: mallory@elsewhere.test\r\n',
  ]) {
    assert.equal(await verdict(field), 'fail', field);
  }
});
