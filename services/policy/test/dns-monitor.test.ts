import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Operations } from '@mailyard/admin';
import { loadConfig, selfSignedCertificate } from '@mailyard/config';
import { PolicyRules } from '@mailyard/policy-rules';
import type { Runtime } from '@mailyard/runtime';
import {
  REDIS_URL,
  createTestRedis,
  createVhost,
  publishRecords,
  startDnsServer,
  tempDir,
  waitFor,
  type TestDnsServer,
  type TestRedis,
  type TestVhost,
  type Zone,
} from '@mailyard/testkit';
import { policySchema, type PolicyService } from '../src/index.js';
import { startPolicyService } from './service.js';

// The policy service's scheduled DNS checks, read as Prometheus reads them: from its
// /metrics endpoint, against a real DNS server on loopback whose answers the test changes.

const HOST = 'mail.example.test';
let dns: TestDnsServer;
let tr: TestRedis;
let vhost: TestVhost;
let rt: Runtime;
let policy: PolicyService;
let tmp: ReturnType<typeof tempDir>;
let ops: Operations;
let cert: string;

const scrape = async () => (await fetch(`http://127.0.0.1:${rt.httpPort}/metrics`)).text();
const sample = (text: string, series: string): number | null => {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? null : Number(line.slice(series.length + 1));
};
const lastRun = 'mailyard_policy_dns_check_last_run_timestamp_seconds';
/** Waits for a run that started after now, then returns what it exported. */
async function nextRun(): Promise<string> {
  const since = Date.now() / 1000;
  return waitFor(
    async () => {
      const text = await scrape();
      return (sample(text, lastRun) ?? 0) > since ? text : null;
    },
    { timeoutMs: 20_000, what: 'a run of the DNS checks' },
  );
}

before(async () => {
  tr = createTestRedis();
  vhost = await createVhost();
  tmp = tempDir();
  ops = new Operations(tr.redis, 'test');
  await ops.addDomain('good.test');
  await ops.addDomain('half.test', { dkim: false });
  await new PolicyRules(tr.redis, tr.prefix).add('smtpd_client_restrictions', 'reject_rbl_client dnsbl.test');
  const zone: Zone = {
    [HOST]: { A: ['127.0.0.25'] },
    '25.0.0.127.in-addr.arpa': { PTR: [HOST] },
    '25.0.0.127.dnsbl.test': { A: ['127.0.0.2'] },
  };
  publishRecords(zone, await ops.domainRecords('good.test', HOST));
  publishRecords(
    zone,
    (await ops.domainRecords('half.test', HOST)).filter((r) => r.purpose !== 'mx'),
  );
  zone['half.test']!.MX = [{ priority: 10, exchange: 'mx.elsewhere.example' }];
  dns = await startDnsServer(zone);
  cert = join(tmp.path, 'cert.pem');
  writeFileSync(cert, selfSignedCertificate(HOST).cert);
  const cfg = loadConfig(policySchema, {
    env: {},
    overrides: {
      amqp_url: vhost.url,
      redis_url: REDIS_URL,
      redis_prefix: tr.prefix,
      http_port: 0,
      listen_address: '127.0.0.1',
      log_level: process.env.TEST_LOG_LEVEL ?? 'silent',
      myhostname: HOST,
      dns_servers: dns.address,
      policy_delegation_enabled: false,
      dns_check_interval: '1s',
      smtp_bind_address: '127.0.0.25',
      tls_cert_file: cert,
    },
  });
  ({ rt, policy } = await startPolicyService(cfg));
});
after(async () => {
  await policy?.stop();
  await rt?.close();
  await dns?.close();
  await tr?.cleanup();
  await vhost?.delete();
  tmp?.cleanup();
});

test('the checks run on their own and are exported for the alert rules', { timeout: 60_000 }, async () => {
  const text = await nextRun();
  const ok = (domain: string, record: string) =>
    sample(text, `mailyard_policy_dns_check_ok{domain="${domain}",record="${record}"}`);
  for (const record of ['mx', 'spf', 'dkim', 'dmarc', 'mta-sts', 'tls-rpt', 'srv'])
    assert.equal(ok('good.test', record), 1, `good.test ${record}`);
  assert.equal(ok('half.test', 'mx'), 0);
  assert.equal(ok('half.test', 'spf'), 0, 'its mx mechanism names another server');
  assert.equal(ok('half.test', 'dmarc'), 1);
  assert.equal(ok(HOST, 'fcrdns'), 1);
  assert.equal(sample(text, 'mailyard_policy_dnsbl_listed{list="dnsbl.test"}'), 1);
  const expiry = sample(text, `mailyard_policy_tls_cert_expiry_seconds{file="${cert}"}`)!;
  assert.ok(expiry > 800 * 86400 && expiry <= 825 * 86400, `${expiry} s`);
  assert.ok(sample(text, 'mailyard_policy_dns_check_duration_seconds')! >= 0);
  // only the configured domains (seven kinds; half.test has no DKIM key), and the server
  const series = text.split('\n').filter((l) => l.startsWith('mailyard_policy_dns_check_ok{'));
  assert.equal(series.length, 7 + 6 + 1, series.join('\n'));
});

test(
  'a fixed record, a delisting and a removed domain show on the next run',
  { timeout: 60_000 },
  async () => {
    dns.set('half.test', { ...dns.zone['half.test'], MX: [{ priority: 10, exchange: HOST }] });
    dns.set('25.0.0.127.dnsbl.test', {});
    await ops.delDomain('good.test').catch(() => undefined);
    // good.test still has no accounts; removing its DKIM keys is not needed to delete it
    const text = await nextRun();
    assert.equal(sample(text, 'mailyard_policy_dns_check_ok{domain="half.test",record="mx"}'), 1);
    assert.equal(sample(text, 'mailyard_policy_dnsbl_listed{list="dnsbl.test"}'), 0);
    assert.doesNotMatch(text, /domain="good\.test"/);
  },
);

test(
  'a resolver failure keeps the last known values and counts as unchecked',
  { timeout: 60_000 },
  async () => {
    const before = sample(await scrape(), 'mailyard_policy_dns_check_unchecked_total') ?? 0;
    dns.set('half.test', { SERVFAIL: true });
    const text = await nextRun();
    assert.equal(sample(text, 'mailyard_policy_dns_check_ok{domain="half.test",record="mx"}'), 1);
    assert.ok(sample(text, 'mailyard_policy_dns_check_unchecked_total')! > before);
  },
);
