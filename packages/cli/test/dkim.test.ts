import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { test, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { DkimKeyStore, DkimSigner, dnsRecord, generateDkimKey } from '@mailyard/dkim';
import { REDIS_URL, startDnsServer } from '@mailyard/testkit';
import { cliHarness } from './harness.js';

/** The selectors mail of `domain` is signed with now, as the msa's signer (no cache) picks them. */
function signingSelectors(t: TestContext, prefix: string, domain: string) {
  const redis = new Redis(REDIS_URL, { keyPrefix: prefix });
  t.after(() => redis.disconnect());
  const signer = new DkimSigner(new DkimKeyStore(redis), { cacheMs: 0 });
  const msg = Buffer.from(`From: a@${domain}\r\nSubject: x\r\n\r\nHello\r\n`);
  return {
    redis,
    selectors: async () => (await signer.sign(msg, domain)).signatures.map((s) => s.selector),
  };
}

test('dkim generate, list, show and delete through mailyard', async (t) => {
  const cli = cliHarness(t);
  assert.deepEqual(await cli.run(['dkim', 'generate', 'example.org']), {
    code: 1,
    stdout: '',
    stderr:
      'mailyard: domain example.org is not a local domain (add it with: mailyard domain add example.org)\n',
  });
  await cli.ok(['domain', 'add', 'example.org', '--no-dkim']);
  const out = await cli.ok(['dkim', 'generate', 'example.org', '--algo', 'ed25519', '--selector', 'ed1']);
  assert.match(out, /^stored ed25519 key ed1 for example\.org; publish this TXT record:\n/);
  assert.match(
    out,
    /^ed1\._domainkey\.example\.org\. IN TXT \( "v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=" \)$/m,
  );
  await cli.ok(['dkim', 'generate', 'example.org', '-s', 'rsa1']);
  assert.match(
    await cli.ok(['dkim', 'list']),
    /^example\.org\ted1\ted25519\t\S+\tsigning\nexample\.org\trsa1\trsa\t\S+\tsigning\n$/,
  );
  assert.equal((await cli.ok(['dkim', 'show', 'example.org'])).split('\n').filter(Boolean).length, 2);
  assert.deepEqual(await cli.run(['dkim', 'generate', 'example.org', '-s', 'ed1']), {
    code: 1,
    stdout: '',
    stderr: 'mailyard: selector ed1 already exists for example.org; choose another one or delete it first\n',
  });
  assert.equal((await cli.run(['dkim', 'generate', 'example.org', '--algo', 'dsa'])).code, 2);
  assert.equal(
    await cli.ok(['dkim', 'delete', 'example.org', 'ed1']),
    'deleted DKIM key ed1 of example.org\n',
  );
  assert.equal((await cli.run(['dkim', 'delete', 'example.org', 'ed1'])).code, 1);
});

test('dkim list of a domain that is not ours says so, as user list and alias list do', async (t) => {
  const cli = cliHarness(t);
  await cli.ok(['domain', 'add', 'example.org', '--no-dkim']);
  // a local domain without keys: nothing to list
  assert.equal(await cli.ok(['dkim', 'list', 'example.org']), '');
  // a typo is not "no keys"
  for (const group of ['dkim', 'user', 'alias'])
    assert.deepEqual(await cli.run([group, 'list', 'exmaple.org']), {
      code: 1,
      stdout: '',
      stderr:
        'mailyard: domain exmaple.org is not a local domain (add it with: mailyard domain add exmaple.org)\n',
    });
  assert.deepEqual(await cli.run(['dkim', 'list', 'not a domain']), {
    code: 1,
    stdout: '',
    stderr: 'mailyard: "not a domain" is not a valid domain name\n',
  });
});

test('a key from dkim generate signs mail that verifies against its printed record', async (t) => {
  const cli = cliHarness(t);
  const dns = await startDnsServer({});
  t.after(() => dns.close());
  await cli.ok(['domain', 'add', 'cli.test', '--no-dkim']);
  const printed = await cli.ok(['dkim', 'generate', 'cli.test', '--selector', 'mail', '--algo', 'ed25519']);
  const name = /^name: +(\S+)$/m.exec(printed)?.[1];
  const value = /^value: +(.+)$/m.exec(printed)?.[1];
  assert.equal(name, 'mail._domainkey.cli.test');
  assert.match(value ?? '', /^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/);
  dns.set(name, { TXT: [value!] });
  const redis = new Redis(REDIS_URL, { keyPrefix: cli.prefix });
  t.after(() => redis.disconnect());
  const msg = Buffer.from(
    'From: Alice <alice@cli.test>\r\nTo: bob@remote.test\r\nSubject: signed\r\n' +
      'Date: Fri, 27 Nov 2026 20:00:00 +0000\r\nMessage-ID: <1@cli.test>\r\n\r\nHello\r\n',
  );
  const signed = await new DkimSigner(new DkimKeyStore(redis)).sign(msg, 'cli.test');
  const res = new Resolver();
  res.setServers([dns.address]);
  const result = await dkimVerify(Buffer.concat([Buffer.from(signed.headers), msg]), {
    resolver: (n: string, type: string) => res.resolve(n, type) as Promise<string[][]>,
  });
  assert.equal(result.results[0]?.status.result, 'pass', JSON.stringify(result.results[0]?.status));

  // an RSA key with the default selector: 2048 bits, split in 255-byte strings in the zone line
  assert.match(
    await cli.ok(['dkim', 'generate', 'cli.test']),
    /rsa-\d{6}\._domainkey\.cli\.test\. IN TXT \( "v=DKIM1; k=rsa; p=[^"]{200,}" "[^"]+" \)/,
  );
  for (const [argv, want] of [
    [['dkim', 'generate', 'cli.test', '--bits', '1024', '-s', 'x'], /RSA key size must be between 2048/],
    [['dkim', 'generate', 'cli.test', '--selector', 'a_b'], /"a_b" is not a valid selector/],
    [['dkim', 'show', 'cli.test', 'gone'], /^mailyard: no DKIM key with selector gone for cli\.test\n$/],
  ] as const) {
    const r = await cli.run([...argv]);
    assert.equal(r.code, 1, argv.join(' '));
    assert.match(r.stderr, want);
  }
});

test('a rotated key signs only once dkim activate has seen its record in DNS', async (t) => {
  const cli = cliHarness(t);
  const dns = await startDnsServer({});
  t.after(() => dns.close());
  const env = { REDIS_URL, REDIS_PREFIX: cli.prefix, MYHOSTNAME: 'mail.rot.test', DNS_SERVERS: dns.address };
  const redis = new Redis(REDIS_URL, { keyPrefix: cli.prefix });
  t.after(() => redis.disconnect());
  const signer = new DkimSigner(new DkimKeyStore(redis), { cacheMs: 0 });
  const res = new Resolver();
  res.setServers([dns.address]);
  const msg = Buffer.from(
    'From: Alice <alice@rot.test>\r\nTo: bob@remote.test\r\nSubject: rotated\r\n' +
      'Date: Fri, 27 Nov 2026 20:00:00 +0000\r\nMessage-ID: <1@rot.test>\r\n\r\nHello\r\n',
  );
  /** The selectors a receiver sees on our mail now, and whether each verifies. */
  const receiverSees = async () => {
    const signed = await signer.sign(msg, 'rot.test');
    const v = await dkimVerify(Buffer.concat([Buffer.from(signed.headers), msg]), {
      resolver: (n: string, type: string) => res.resolve(n, type) as Promise<string[][]>,
    });
    return v.results.map((r) => `${r.selector}:${r.status.result}`);
  };
  const publish = (selector: string, value: string) =>
    dns.set(`${selector}._domainkey.rot.test`, { TXT: [value] });
  const valueOf = async (selector: string) =>
    /"(v=DKIM1[^]*)" \)$/.exec((await cli.ok(['dkim', 'show', 'rot.test', selector])).trim())![1]!;

  await cli.ok(['domain', 'add', 'rot.test', '--no-dkim']);
  await cli.ok(['dkim', 'generate', 'rot.test', '--algo', 'ed25519', '-s', 'old']);
  publish('old', await valueOf('old'));
  assert.deepEqual(await receiverSees(), ['old:pass']);

  const out = await cli.ok(['dkim', 'rotate', 'rot.test', '--algo', 'ed25519'], { env });
  const selector = /^stored ed25519 key (\S+) for rot\.test; old signs until it is activated\.$/m.exec(
    out,
  )?.[1];
  assert.match(selector ?? '', /^ed25519-\d{6}$/);
  assert.match(out, new RegExp(`^${selector}\\._domainkey\\.rot\\.test\\. IN TXT`, 'm'));
  assert.match(out, /^old\._domainkey\.rot\.test\. IN TXT/m);
  assert.match(out, new RegExp(`run: mailyard dkim activate rot\\.test ${selector}$`, 'm'));
  assert.match(out, /run: mailyard dkim retire rot\.test old$/m);
  // both records are among those to publish
  const records = await cli.ok(['domain', 'records', 'rot.test'], { env });
  assert.match(records, /^old\._domainkey\.rot\.test\./m);
  assert.match(records, new RegExp(`^${selector}\\._domainkey\\.rot\\.test\\.`, 'm'));
  // scripts reading the first four columns keep working; the last is the state
  assert.match(
    await cli.ok(['dkim', 'list', 'rot.test']),
    new RegExp(
      `^rot\\.test\\told\\ted25519\\t\\S+\\tsigning\\nrot\\.test\\t${selector}\\ted25519\\t\\S+\\tpending\\n$`,
    ),
  );
  // the new record is not published yet: mail keeps the old signature, which verifies
  assert.deepEqual(await receiverSees(), ['old:pass']);
  const early = await cli.run(['dkim', 'activate', 'rot.test', selector!], { env });
  assert.deepEqual([early.code, early.stdout], [1, '']);
  assert.equal(
    early.stderr,
    `mailyard: no TXT record at ${selector}._domainkey.rot.test yet: publish the record \`mailyard dkim show rot.test ${selector}\` prints, wait for it to be visible, and activate again\n`,
  );
  // a record with another key (here the old one's) is not this key's
  publish(selector!, await valueOf('old'));
  const wrong = await cli.run(['dkim', 'activate', 'rot.test', selector!], { env });
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /is not this key's \(the published public key differs from the stored key\)/);
  // DNS failing says nothing about the record: a temporary failure (EX_TEMPFAIL)
  dns.set(`${selector}._domainkey.rot.test`, { SERVFAIL: true });
  const failing = await cli.run(['dkim', 'activate', 'rot.test', selector!], { env });
  assert.equal(failing.code, 75, failing.stderr);
  assert.match(failing.stderr, /^mailyard: DNS could not be asked for \S+ \(.+\); try again\n$/);
  assert.deepEqual(await receiverSees(), ['old:pass']);
  // the key that signs cannot be retired while the new one waits
  const refused = await cli.run(['dkim', 'retire', 'rot.test', 'old']);
  assert.deepEqual(refused, {
    code: 1,
    stdout: '',
    stderr: `mailyard: old is the ed25519 key that signs mail of rot.test until ${selector} is activated: run mailyard dkim activate rot.test ${selector} first\n`,
  });

  publish(selector!, await valueOf(selector!));
  assert.equal(
    await cli.ok(['dkim', 'activate', 'rot.test', selector!], { env }),
    `${selector} signs mail of rot.test from now on (within 30 s); keep the old records published until you retire them\n`,
  );
  assert.deepEqual(await receiverSees(), [`${selector}:pass`]);
  assert.deepEqual(
    (await cli.ok(['dkim', 'list', 'rot.test'])).split('\n').map((l) => l.split('\t').at(-1)),
    ['retiring', 'signing', ''],
  );
  assert.match(
    await cli.ok(['audit', '-n', '1']),
    new RegExp(`\\tdkim\\.activate\\trot\\.test/${selector}\\t`),
  );
  assert.equal(
    await cli.ok(['dkim', 'activate', 'rot.test', selector!], { env }),
    `${selector} already signs mail of rot.test\n`,
  );
  const replaced = await cli.run(['dkim', 'activate', 'rot.test', 'old'], { env });
  assert.match(
    replaced.stderr,
    /key old of rot\.test is not waiting to sign: a newer ed25519 key replaced it/,
  );

  // a second rotation in the same month gets a name of its own; the pending key can be retired
  const again = await cli.ok(['dkim', 'rotate', 'rot.test', '--algo', 'ed25519'], { env });
  assert.match(again, new RegExp(`^stored ed25519 key ${selector}-2 for rot\\.test; ${selector} signs`, 'm'));
  assert.match(await cli.ok(['dkim', 'retire', 'rot.test', `${selector}-2`]), /^retired DKIM key/);
  assert.match(await cli.ok(['dkim', 'retire', 'rot.test', 'old']), /^retired DKIM key old of rot\.test;/);
  assert.doesNotMatch(await cli.ok(['domain', 'records', 'rot.test'], { env }), /^old\._domainkey/m);
  assert.match(await cli.ok(['audit', '-n', '1']), /\tdkim\.retire\trot\.test\/old\talgorithm=ed25519\n$/);
  assert.deepEqual(await receiverSees(), [`${selector}:pass`]);
});

test('a second key of an algorithm from dkim generate waits for activate as well', async (t) => {
  const cli = cliHarness(t);
  const dns = await startDnsServer({});
  t.after(() => dns.close());
  const env = { REDIS_URL, REDIS_PREFIX: cli.prefix, DNS_SERVERS: dns.address };
  const { selectors } = signingSelectors(t, cli.prefix, 'gen.test');

  await cli.ok(['domain', 'add', 'gen.test', '--no-dkim']);
  const first = await cli.ok(['dkim', 'generate', 'gen.test', '--algo', 'ed25519', '-s', 'one']);
  assert.doesNotMatch(first, /activate/);
  assert.deepEqual(await selectors(), ['one']);
  const second = await cli.ok(['dkim', 'generate', 'gen.test', '--algo', 'ed25519', '-s', 'two']);
  assert.match(
    second,
    /^Another ed25519 key signs gen\.test now; once the record is visible in DNS, run: mailyard dkim activate gen\.test two$/m,
  );
  assert.deepEqual(await selectors(), ['one']);
  assert.equal((await cli.run(['dkim', 'activate', 'gen.test', 'two'], { env })).code, 1);
  const value = /^value: (.+)$/m.exec(second)![1]!;
  dns.set('two._domainkey.gen.test', { TXT: [value] });
  await cli.ok(['dkim', 'activate', 'gen.test', 'two'], { env });
  assert.deepEqual(await selectors(), ['two']);
});

test('dkim delete keeps the signing key while a newer key waits for activate', async (t) => {
  const cli = cliHarness(t);
  const { selectors } = signingSelectors(t, cli.prefix, 'del.test');

  await cli.ok(['domain', 'add', 'del.test', '--no-dkim']);
  await cli.ok(['dkim', 'generate', 'del.test', '--algo', 'ed25519', '-s', 'old']);
  await cli.ok(['dkim', 'generate', 'del.test', '--algo', 'ed25519', '-s', 'new']);
  // the former procedure (generate, publish, delete the old key) would leave mail unsigned
  assert.deepEqual(await cli.run(['dkim', 'delete', 'del.test', 'old']), {
    code: 1,
    stdout: '',
    stderr:
      'mailyard: old is the ed25519 key that signs mail of del.test and new waits to replace it: run mailyard dkim activate del.test new first\n',
  });
  assert.deepEqual(await selectors(), ['old']);
  // the waiting key itself can go, and then the old one (nothing else of its algorithm waits)
  await cli.ok(['dkim', 'delete', 'del.test', 'new']);
  await cli.ok(['dkim', 'delete', 'del.test', 'old']);
  assert.deepEqual(await selectors(), []);
});

test('a previous release, during a rolling upgrade or after a rollback, never signs with a waiting key', async (t) => {
  const cli = cliHarness(t);
  const dns = await startDnsServer({});
  t.after(() => dns.close());
  const env = { REDIS_URL, REDIS_PREFIX: cli.prefix, DNS_SERVERS: dns.address };
  const { redis, selectors } = signingSelectors(t, cli.prefix, 'roll.test');
  /** What the release before pending keys signs with: the newest key of each algorithm in dkim:key:<domain>. */
  const previousRelease = async () => {
    const all = Object.entries(await redis.hgetall('dkim:key:roll.test')).map(([selector, raw]) => ({
      selector,
      ...(JSON.parse(raw) as { algorithm: string; created: string }),
    }));
    all.sort((a, b) => a.created.localeCompare(b.created) || a.selector.localeCompare(b.selector));
    return [...new Map(all.map((k) => [k.algorithm, k.selector])).values()];
  };

  await cli.ok(['domain', 'add', 'roll.test', '--no-dkim']);
  // a key as an earlier release stored it signs as it did
  const old = { ...generateDkimKey('ed25519'), created: '2026-01-01T00:00:00.000Z' };
  await redis.hset('dkim:key:roll.test', 'old', JSON.stringify(old));
  await redis.sadd('dkim:domains', 'roll.test');
  assert.deepEqual(await selectors(), ['old']);

  const out = await cli.ok(['dkim', 'rotate', 'roll.test', '--algo', 'ed25519', '-s', 'new'], { env });
  assert.match(out, /^stored ed25519 key new for roll\.test; old signs until it is activated\.$/m);
  assert.deepEqual(await selectors(), ['old']);
  assert.deepEqual(await previousRelease(), ['old']);
  assert.match(await cli.ok(['dkim', 'list', 'roll.test']), /^roll\.test\told\t.*\nroll\.test\tnew\t/);

  const rec = dnsRecord('roll.test', 'new', (await new DkimKeyStore(redis).get('roll.test', 'new'))!);
  dns.set(rec.name, { TXT: [rec.value] });
  await cli.ok(['dkim', 'activate', 'roll.test', 'new'], { env });
  assert.deepEqual(await selectors(), ['new']);
  assert.deepEqual(await previousRelease(), ['new']);
});

test('dkim activate refuses an older waiting key while a newer one signs', async (t) => {
  const cli = cliHarness(t);
  const dns = await startDnsServer({});
  t.after(() => dns.close());
  const env = { REDIS_URL, REDIS_PREFIX: cli.prefix, DNS_SERVERS: dns.address };
  const redis = new Redis(REDIS_URL, { keyPrefix: cli.prefix });
  t.after(() => redis.disconnect());
  const store = new DkimKeyStore(redis);
  const signer = new DkimSigner(store, { cacheMs: 0 });
  const msg = Buffer.from('From: a@two.test\r\nSubject: x\r\n\r\nHello\r\n');
  const selectors = async () => (await signer.sign(msg, 'two.test')).signatures.map((s) => s.selector);
  const publish = async (selector: string) => {
    const rec = dnsRecord('two.test', selector, (await store.get('two.test', selector))!);
    dns.set(rec.name, { TXT: [rec.value] });
  };

  await cli.ok(['domain', 'add', 'two.test', '--no-dkim']);
  await cli.ok(['dkim', 'generate', 'two.test', '--algo', 'ed25519', '-s', 'a']);
  await cli.ok(['dkim', 'generate', 'two.test', '--algo', 'ed25519', '-s', 'b']);
  await cli.ok(['dkim', 'generate', 'two.test', '--algo', 'ed25519', '-s', 'c']);
  await publish('b');
  await publish('c');
  await cli.ok(['dkim', 'activate', 'two.test', 'c'], { env });
  assert.deepEqual(await selectors(), ['c']);
  assert.deepEqual(await cli.run(['dkim', 'activate', 'two.test', 'b'], { env }), {
    code: 1,
    stdout: '',
    stderr:
      'mailyard: b would not sign mail of two.test: c, a newer ed25519 key, signs already; retire b instead (mailyard dkim retire two.test b)\n',
  });
  assert.deepEqual(await selectors(), ['c']);
  await cli.ok(['dkim', 'retire', 'two.test', 'b']);
});
