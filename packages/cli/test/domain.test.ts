import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { DkimKeyStore, generateDkimKey } from '@mailyard/dkim';
import { REDIS_URL } from '@mailyard/testkit';
import { cliHarness } from './harness.js';

test('domain add, list and del', async (t) => {
  const cli = cliHarness(t);
  assert.match(await cli.ok(['domain', 'add', 'Example.ORG', '--no-dkim']), /^added domain example\.org\n/);
  await cli.ok(['domain', 'add', 'bücher.example', '--no-dkim']);
  await cli.ok(['domain', 'add', 'a.test', '--no-dkim']);
  assert.equal(await cli.ok(['domain', 'list']), 'a.test\nexample.org\nxn--bcher-kva.example\n');
  assert.equal(await cli.ok(['domain', 'del', 'EXAMPLE.org']), 'deleted domain example.org\n');
  assert.equal(await cli.ok(['domain', 'del', 'bücher.example']), 'deleted domain xn--bcher-kva.example\n');
  assert.deepEqual(await cli.directory.listDomains(), ['a.test']);
});

test('domain list with no domains prints nothing', async (t) => {
  const cli = cliHarness(t);
  assert.deepEqual(await cli.run(['domain', 'list']), { code: 0, stdout: '', stderr: '' });
});

test('domain add of an existing domain fails and changes nothing', async (t) => {
  const cli = cliHarness(t);
  await cli.ok(['domain', 'add', 'example.org']);
  assert.deepEqual(await cli.run(['domain', 'add', 'EXAMPLE.ORG']), {
    code: 1,
    stdout: '',
    stderr: 'mailyard: domain example.org already exists\n',
  });
  assert.deepEqual(await cli.directory.listDomains(), ['example.org']);
});

for (const bad of ['exa mple.org', 'example..org', '*.example.org', 'user@example.org']) {
  test(`domain add refuses the invalid name ${JSON.stringify(bad)}`, async (t) => {
    const cli = cliHarness(t);
    const r = await cli.run(['domain', 'add', bad]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `mailyard: "${bad}" is not a valid domain name\n`);
    assert.deepEqual(await cli.directory.listDomains(), []);
  });
}

test('a name that looks like an option is a usage error unless after --', async (t) => {
  const cli = cliHarness(t);
  const r = await cli.run(['domain', 'add', '-example.org']);
  assert.equal(r.code, 2);
  assert.equal(r.stderr, "mailyard: unknown option '-example.org'\n");
  const r2 = await cli.run(['domain', 'add', '--', '-example.org']);
  assert.equal(r2.code, 1);
  assert.equal(r2.stderr, 'mailyard: "-example.org" is not a valid domain name\n');
});

test('domain del of an unknown domain fails', async (t) => {
  const cli = cliHarness(t);
  const r = await cli.run(['domain', 'del', 'nope.test']);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'mailyard: domain nope.test does not exist\n');
});

test('domain del refuses a domain that still has accounts or aliases', async (t) => {
  const cli = cliHarness(t);
  await cli.ok(['domain', 'add', 'example.org']);
  await cli.ok(['user', 'add', 'alice@example.org', '--password-stdin'], { input: 'a long enough secret\n' });
  const r = await cli.run(['domain', 'del', 'example.org']);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^mailyard: domain example\.org still has 1 account and 0 aliases; delete them first\n$/,
  );
  assert.deepEqual(await cli.directory.listDomains(), ['example.org']);
  await cli.ok(['user', 'del', 'alice@example.org']);
  await cli.ok(['domain', 'del', 'example.org']);
  assert.deepEqual(await cli.directory.listDomains(), []);
});

test('domain add makes RSA and Ed25519 DKIM keys and prints every record to publish', async (t) => {
  const cli = cliHarness(t);
  const out = await cli.ok(['domain', 'add', 'example.org'], {
    env: { REDIS_URL, REDIS_PREFIX: cli.prefix, MYHOSTNAME: 'mail.example.org' },
  });
  const [first] = out.split('\n');
  assert.match(first!, /^added domain example\.org with DKIM keys rsa-\d{6} and ed25519-\d{6}$/);
  for (const line of [
    /^example\.org\. IN MX 10 mail\.example\.org\.$/m,
    /^example\.org\. IN TXT "v=spf1 mx -all"$/m,
    /^rsa-\d{6}\._domainkey\.example\.org\. IN TXT \( "v=DKIM1; k=rsa; p=[^"]{200,}" "[^"]+" \)$/m,
    /^ed25519-\d{6}\._domainkey\.example\.org\. IN TXT "v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}="$/m,
    /^_dmarc\.example\.org\. IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@example\.org"$/m,
    /^_submissions\._tcp\.example\.org\. IN SRV 0 1 465 mail\.example\.org\.$/m,
  ])
    assert.match(out, line);
  const keys = await cli.ok(['dkim', 'list', 'example.org']);
  assert.match(
    keys,
    /^example\.org\trsa-\d{6}\trsa\t\S+\tsigning\nexample\.org\ted25519-\d{6}\ted25519\t\S+\tsigning\n$/,
  );
  assert.equal((await cli.ok(['domain', 'records', 'example.org'])).split('\n').filter(Boolean).length, 15);
  assert.equal((await cli.run(['domain', 'records', 'nope.test'])).code, 1);
});

test('domain del deletes its DKIM keys, and says which; added again it gets new ones', async (t) => {
  const cli = cliHarness(t);
  await cli.ok(['domain', 'add', 'example.org']);
  await cli.ok(['domain', 'add', 'other.test']);
  const records = await cli.ok(['dkim', 'show', 'example.org']);
  assert.match(
    await cli.ok(['domain', 'del', 'example.org']),
    /^deleted domain example\.org and its DKIM keys rsa-\d{6}, ed25519-\d{6}; their DNS records can go\n$/,
  );
  // listed nowhere, and nothing can be done with them any more
  assert.doesNotMatch(await cli.ok(['dkim', 'list']), /example\.org/);
  assert.deepEqual(await cli.run(['dkim', 'list', 'example.org']), {
    code: 1,
    stdout: '',
    stderr:
      'mailyard: domain example.org is not a local domain (add it with: mailyard domain add example.org)\n',
  });
  assert.deepEqual(await cli.run(['dkim', 'show', 'example.org']), {
    code: 1,
    stdout: '',
    stderr: 'mailyard: no DKIM keys for example.org\n',
  });
  // the other domain keeps its own
  assert.match(await cli.ok(['dkim', 'list']), /^other\.test\trsa-\d{6}\t.*\nother\.test\ted25519-/);
  // added again: keys of its own, not the deleted domain's
  await cli.ok(['domain', 'add', 'example.org']);
  assert.notEqual(await cli.ok(['dkim', 'show', 'example.org']), records);
  // a domain without keys says nothing of them
  await cli.ok(['domain', 'add', 'bare.test', '--no-dkim']);
  assert.equal(await cli.ok(['domain', 'del', 'bare.test']), 'deleted domain bare.test\n');
});

test('keys an earlier release kept for a deleted domain are not listed, but can be deleted', async (t) => {
  const cli = cliHarness(t);
  const redis = new Redis(REDIS_URL, { keyPrefix: cli.prefix });
  t.after(() => redis.disconnect());
  // as `domain del` left them before it deleted them: stored for a domain that is gone
  await new DkimKeyStore(redis).add('gone.test', 'rsa-202501', generateDkimKey('ed25519'));
  await cli.ok(['domain', 'add', 'here.test', '--no-dkim']);
  assert.equal(await cli.ok(['dkim', 'list']), '');
  assert.match(await cli.ok(['dkim', 'list', 'gone.test']), /^gone\.test\trsa-202501\ted25519\t/);
  assert.equal(
    await cli.ok(['dkim', 'delete', 'gone.test', 'rsa-202501']),
    'deleted DKIM key rsa-202501 of gone.test\n',
  );
});
