import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { Operations } from '@mailyard/admin';
import {
  REDIS_URL,
  publishRecords,
  startDnsServer,
  tempDir,
  type TestDnsServer,
  type Zone,
} from '@mailyard/testkit';
import { cliHarness } from './harness.js';

// `mailyard dns check` against a real DNS server on loopback.

const HOST = 'mail.example.test';
let dns: TestDnsServer;
before(async () => {
  dns = await startDnsServer({
    [HOST]: { A: ['127.0.0.25'] },
    '25.0.0.127.in-addr.arpa': { PTR: [HOST] },
    'broken.test': { SERVFAIL: true },
  });
});
after(() => dns.close());

const envOf = (prefix: string) => ({
  REDIS_URL,
  REDIS_PREFIX: prefix,
  MYHOSTNAME: HOST,
  DNS_SERVERS: dns.address,
  SMTP_BIND_ADDRESS: '127.0.0.25',
});

test('dns check: a domain published as printed passes, exit 0', { timeout: 30_000 }, async (t) => {
  const cli = cliHarness(t);
  const env = envOf(cli.prefix);
  await cli.ok(['domain', 'add', 'good.test'], { env });
  const zone: Zone = {};
  const redis = new Redis(REDIS_URL, { keyPrefix: cli.prefix });
  t.after(() => redis.disconnect());
  publishRecords(zone, await new Operations(redis, 'test').domainRecords('good.test', HOST));
  for (const [name, rec] of Object.entries(zone)) dns.set(name, rec);
  const r = await cli.run(['dns', 'check', 'good.test'], { env });
  assert.equal(r.stderr, '');
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^good\.test\n/);
  assert.match(r.stdout, /^ {2}ok {8}MX {4}good\.test$/m);
  assert.match(r.stdout, /^ {2}ok {8}SRV {3}_imaps\._tcp\.good\.test$/m);
  assert.match(
    r.stdout,
    /^server mail\.example\.test\n {2}ok {8}127\.0\.0\.25 {6}PTR mail\.example\.test; mail\.example\.test resolves to it$/m,
  );
  assert.doesNotMatch(r.stdout, /WRONG|MISSING|UNCHECKED/);
});

test(
  'dns check: missing and wrong records are shown with what to publish, exit 1',
  { timeout: 30_000 },
  async (t) => {
    const cli = cliHarness(t);
    const env = envOf(cli.prefix);
    await cli.ok(['domain', 'add', 'half.test', '--no-dkim'], { env });
    dns.set('half.test', { MX: [{ priority: 10, exchange: 'mx.elsewhere.example' }], TXT: ['v=spf1 -all'] });
    const r = await cli.run(['dns', 'check'], { env });
    assert.equal(r.code, 1);
    assert.match(
      r.stdout,
      /^ {2}WRONG {5}MX {4}half\.test: no MX record names mail\.example\.test\n {12}found: {3}10 mx\.elsewhere\.example\.\n {12}publish: half\.test\. IN MX 10 mail\.example\.test\.$/m,
    );
    assert.match(r.stdout, /^ {2}WRONG {5}TXT {3}half\.test: does not permit 127\.0\.0\.25 \(fail\)$/m);
    assert.match(
      r.stdout,
      /^ {2}MISSING {3}TXT {3}_dmarc\.half\.test\n {12}publish: _dmarc\.half\.test\. IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@half\.test"$/m,
    );
    assert.match(r.stderr, /^mailyard: \d+ checks fail: publish the records shown, fix what is marked\n$/);
  },
);

test(
  'dns check: a failing DNS server is "could not check", exit 75, never missing',
  { timeout: 30_000 },
  async (t) => {
    const cli = cliHarness(t);
    const env = envOf(cli.prefix);
    await cli.ok(['domain', 'add', 'broken.test', '--no-dkim'], { env });
    for (const n of [
      '_dmarc',
      '_smtp._tls',
      '_mta-sts',
      'mta-sts',
      'autoconfig',
      'autodiscover',
      ...['_submissions._tcp', '_submission._tcp', '_imaps._tcp', '_imap._tcp', '_pop3s._tcp'],
    ])
      dns.set(`${n}.broken.test`, { SERVFAIL: true });
    const r = await cli.run(['dns', 'check', 'broken.test'], { env });
    assert.equal(r.code, 75);
    assert.match(r.stdout, /^ {2}UNCHECKED MX {4}broken\.test: could not check: ESERVFAIL$/m);
    assert.doesNotMatch(r.stdout, /MISSING|WRONG/);
    assert.match(r.stderr, /^mailyard: \d+ checks could not be made \(DNS failed\); try again\n$/);
  },
);

test('dns check of an unknown domain is one sentence, exit 1', { timeout: 30_000 }, async (t) => {
  const cli = cliHarness(t);
  const r = await cli.run(['dns', 'check', 'nope.test'], { env: envOf(cli.prefix) });
  assert.deepEqual(r, {
    code: 1,
    stdout: '',
    stderr: 'mailyard: domain nope.test is not a local domain (add it with: mailyard domain add nope.test)\n',
  });
});

/** A certificate for HOST valid for `days` from now, in a directory removed after the test. */
function certificate(t: TestContext, days: number): string {
  const dir = tempDir();
  t.after(() => dir.cleanup());
  const cert = join(dir.path, 'cert.pem');
  const r = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      `${days}`,
    ].concat(['-subj', `/CN=${HOST}`, '-keyout', join(dir.path, 'key.pem'), '-out', cert]),
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  return cert;
}

test(
  'dns check: a certificate expiring within a fortnight fails the check',
  { timeout: 30_000 },
  async (t) => {
    const cli = cliHarness(t);
    const cert = certificate(t, 5);
    const r = await cli.run(['dns', 'check'], { env: { ...envOf(cli.prefix), TLS_CERT_FILE: cert } });
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^ {2}EXPIRING {2}certificate valid until \S+ \([45] days left\)$/m);
    assert.equal(r.stderr, 'mailyard: 1 check fails: publish the records shown, fix what is marked\n');
  },
);

test('dns check: a certificate with a day left says 1 day, not 1 days', { timeout: 30_000 }, async (t) => {
  const cli = cliHarness(t);
  // two days from now: a day and some hours left
  const cert = certificate(t, 2);
  const r = await cli.run(['dns', 'check'], { env: { ...envOf(cli.prefix), TLS_CERT_FILE: cert } });
  assert.equal(r.code, 1);
  assert.match(r.stdout, /^ {2}EXPIRING {2}certificate valid until \S+ \(1 day left\)$/m);
});
