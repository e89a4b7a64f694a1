import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { DkimKeyStore, DkimSigner } from '@mailyard/dkim';
import { REDIS_URL, startDnsServer } from '@mailyard/testkit';
import { cliHarness } from './harness.js';

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
    /^example\.org\ted1\ted25519\t\S+\nexample\.org\trsa1\trsa\t\S+\n$/,
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

test('dkim rotate publishes both selectors until the old key is retired', async (t) => {
  const cli = cliHarness(t);
  const env = { REDIS_URL, REDIS_PREFIX: cli.prefix, MYHOSTNAME: 'mail.rot.test' };
  await cli.ok(['domain', 'add', 'rot.test', '--no-dkim']);
  await cli.ok(['dkim', 'generate', 'rot.test', '--algo', 'ed25519', '-s', 'old']);
  const out = await cli.ok(['dkim', 'rotate', 'rot.test', '--algo', 'ed25519'], { env });
  const selector = /^stored ed25519 key (\S+) for rot\.test; it signs from now on\.$/m.exec(out)?.[1];
  assert.match(selector ?? '', /^ed25519-\d{6}$/);
  assert.match(out, new RegExp(`^${selector}\\._domainkey\\.rot\\.test\\. IN TXT`, 'm'));
  assert.match(out, /^old\._domainkey\.rot\.test\. IN TXT/m);
  assert.match(out, /run: mailyard dkim retire rot\.test old$/m);
  // both records are among those to publish
  const records = await cli.ok(['domain', 'records', 'rot.test'], { env });
  assert.match(records, /^old\._domainkey\.rot\.test\./m);
  assert.match(records, new RegExp(`^${selector}\\._domainkey\\.rot\\.test\\.`, 'm'));
  // a second rotation in the same month gets a name of its own
  const again = await cli.ok(['dkim', 'rotate', 'rot.test', '--algo', 'ed25519'], { env });
  assert.match(again, new RegExp(`^stored ed25519 key ${selector}-2 for rot\\.test`, 'm'));
  // the key that signs cannot be retired
  const refused = await cli.run(['dkim', 'retire', 'rot.test', `${selector}-2`]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /is the ed25519 key that signs mail of rot\.test; rotate first/);
  assert.match(await cli.ok(['dkim', 'retire', 'rot.test', 'old']), /^retired DKIM key old of rot\.test;/);
  assert.doesNotMatch(await cli.ok(['domain', 'records', 'rot.test'], { env }), /^old\._domainkey/m);
  assert.match(await cli.ok(['audit', '-n', '1']), /\tdkim\.retire\trot\.test\/old\talgorithm=ed25519\n$/);
});
