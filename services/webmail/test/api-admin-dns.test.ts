// The admin console's DNS API: guarded by the admin role, live checks against the
// platform's loopback DNS server, 404 for a domain that is not ours, 503 when DNS fails.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { webmailFile } from './file-setup.js';
import { ALICE, BOB, HOST, type WebmailTestbed } from './webmail-harness.js';
import { WebClient } from './web-client.js';

let t: WebmailTestbed;
webmailFile({}, async (f) => {
  t = f.t;
  await t.p.directory.setAdmin(ALICE, true);
  t.p.dns.set(HOST, { A: ['127.0.0.1'] });
  t.p.dns.set('1.0.0.127.in-addr.arpa', { PTR: [HOST] });
  t.p.dns.set('example.test', { MX: [{ priority: 10, exchange: HOST }] });
});
const client = () => new WebClient(t.webmail.port, t.ca);

test('only administrators may ask; others are told so', { timeout: 60_000 }, async () => {
  const anonymous = client();
  assert.equal((await anonymous.get('/api/admin/dns/server')).status, 401);
  const bob = client();
  assert.equal((await bob.login(BOB)).status, 200);
  for (const path of ['/api/admin/dns/server', '/api/admin/dns/domains/example.test']) {
    const r = await bob.get(path);
    assert.deepEqual([r.status, r.json.error], [403, 'not_admin'], path);
  }
});

test('a domain: each record with what DNS answers and its status', { timeout: 60_000 }, async () => {
  const alice = client();
  assert.equal((await alice.login(ALICE)).status, 200);
  const r = await alice.get('/api/admin/dns/domains/Example.TEST');
  assert.equal(r.status, 200);
  assert.equal(r.json.domain, 'example.test');
  assert.ok(Date.parse(r.json.checkedAt) > Date.now() - 60_000);
  const mx = r.json.records.find((x: { kind: string }) => x.kind === 'mx');
  assert.deepEqual(mx, {
    kind: 'mx',
    name: 'example.test',
    type: 'MX',
    expected: [`10 ${HOST}.`],
    found: [`10 ${HOST}.`],
    status: 'ok',
    zoneLine: `example.test. IN MX 10 ${HOST}.`,
  });
  const dmarc = r.json.records.find((x: { kind: string }) => x.kind === 'dmarc');
  assert.deepEqual([dmarc.status, dmarc.found], ['missing', []]);
  const kinds = new Set(r.json.records.map((x: { kind: string }) => x.kind));
  for (const k of ['mx', 'spf', 'dmarc', 'mta-sts', 'tls-rpt', 'srv']) assert.ok(kinds.has(k), k);
  // fixed in DNS: seen on the next request, no cache in between
  t.p.dns.set('_dmarc.example.test', { TXT: ['v=DMARC1; p=reject'] });
  const again = await alice.get('/api/admin/dns/domains/example.test');
  assert.equal(again.json.records.find((x: { kind: string }) => x.kind === 'dmarc').status, 'ok');
});

test('a domain that is not ours is 404, a bad name 400', { timeout: 60_000 }, async () => {
  const alice = client();
  await alice.login(ALICE);
  const r = await alice.get('/api/admin/dns/domains/elsewhere.example');
  assert.equal(r.status, 404);
  assert.equal(r.json.error, 'no_such_domain');
  assert.match(r.json.message, /elsewhere\.example is not a local domain/);
  const bad = await alice.get('/api/admin/dns/domains/exa%20mple');
  assert.equal(bad.status, 400);
});

test('DNS failing for every record of a domain is 503, not "missing"', { timeout: 60_000 }, async () => {
  await t.p.directory.addDomain('broken.test');
  const names = ['', '_dmarc.', '_smtp._tls.', '_mta-sts.', 'mta-sts.', 'autoconfig.', 'autodiscover.'];
  for (const s of ['_submissions', '_submission', '_imaps', '_imap', '_pop3s']) names.push(`${s}._tcp.`);
  for (const n of names) t.p.dns.set(`${n}broken.test`, { SERVFAIL: true });
  const alice = client();
  await alice.login(ALICE);
  const r = await alice.get('/api/admin/dns/domains/broken.test');
  assert.equal(r.status, 503);
  assert.equal(r.json.error, 'dns_unavailable');
  assert.match(r.json.message, /ESERVFAIL/);
});

test('the server: forward and reverse DNS, certificate', { timeout: 60_000 }, async () => {
  const alice = client();
  await alice.login(ALICE);
  const r = await alice.get('/api/admin/dns/server');
  assert.equal(r.status, 200);
  assert.equal(r.json.hostname, HOST);
  assert.deepEqual(r.json.addresses, [{ address: '127.0.0.1', forward: true, ptr: [HOST], status: 'ok' }]);
  assert.deepEqual(r.json.dnsbl, []);
  assert.ok(r.json.tls.daysLeft > 800, `${r.json.tls.daysLeft} days`);
  assert.ok(Date.parse(r.json.tls.notAfter) > Date.now());
});
