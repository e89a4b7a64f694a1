import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import selfsigned from 'selfsigned';
import { dnsRecord, generateDkimKey } from '@mailyard/dkim';
import { createResolver } from '@mailyard/dns';
import { PolicyRules } from '@mailyard/policy-rules';
import {
  createTestRedis,
  startDnsServer,
  tempDir,
  type TestDnsServer,
  type TestRedis,
  publishRecords as publish,
  reverseName,
  type Zone,
} from '@mailyard/testkit';
import { DnsChecker, Operations, standardClientEndpoints, type DomainReport } from '../src/index.js';

// The checks against a real DNS server on loopback: one domain published right, one with
// every record wrong, one with nothing, one whose server fails; the server's identity
// with a good, a wrong, a missing and an unanswerable reverse name, and a blocklist.

const HOST = 'mail.example.test';

let dns: TestDnsServer;
let tr: TestRedis;
let ops: Operations;
let tmp: ReturnType<typeof tempDir>;
let checker: DnsChecker;

const byName = (r: DomainReport, name: string, type?: string) => {
  const found = r.records.filter((x) => x.name === name && (!type || x.type === type));
  assert.equal(found.length, 1, `one record ${name}`);
  return found[0]!;
};

before(async () => {
  tr = createTestRedis();
  ops = new Operations(tr.redis, 'test');
  tmp = tempDir();
  await ops.addDomain('good.test');
  await ops.addDomain('bad.test');
  await ops.addDomain('none.test', { dkim: false });
  await ops.addDomain('broken.test', { dkim: false });
  const zone: Zone = {
    [HOST]: { A: ['127.0.0.25'] },
    '25.0.0.127.in-addr.arpa': { PTR: [HOST] },
    '26.0.0.127.in-addr.arpa': { PTR: ['host-26.isp.example'] },
    '28.0.0.127.in-addr.arpa': { SERVFAIL: true },
    'v6.example.test': { AAAA: ['2001:db8::25'] },
    [reverseName('2001:db8::25')]: { PTR: ['v6.example.test'] },
    // 127.0.0.26 is listed; 127.0.0.25 is not
    '26.0.0.127.dnsbl.test': { A: ['127.0.0.2'] },
    'broken.test': { SERVFAIL: true },
    '_dmarc.broken.test': { SERVFAIL: true },
  };
  publish(zone, await ops.domainRecords('good.test', HOST));
  // bad.test: every record there, every one wrong
  const bad = await ops.domainRecords('bad.test', HOST);
  const dkimName = bad.find((r) => r.purpose.startsWith('dkim:'))!.name;
  Object.assign(zone, {
    'bad.test': {
      MX: [{ priority: 10, exchange: 'mx.elsewhere.example' }],
      TXT: ['v=spf1 ip4:192.0.2.1 -all'],
    },
    [dkimName]: { TXT: ['v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAnotourkey'] },
    '_dmarc.bad.test': { TXT: ['v=DMARC1; p=quarantine', 'v=DMARC1; p=none'] },
    '_smtp._tls.bad.test': { TXT: ['v=TLSRPTv1;'] },
    '_mta-sts.bad.test': { TXT: ['v=STSv1; id=not-valid!'] },
    'autoconfig.bad.test': { CNAME: 'autoconfig.hoster.example' },
    '_imaps._tcp.bad.test': { SRV: [{ priority: 0, weight: 1, port: 143, target: HOST }] },
    '_submission._tcp.bad.test': { SRV: [{ priority: 0, weight: 0, port: 0, target: '.' }] },
  });
  dns = await startDnsServer(zone);
  const certFile = join(tmp.path, 'cert.pem');
  const keyPair = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const pems = selfsigned.generate([{ name: 'commonName', value: HOST }], {
    keyPair,
    days: 30,
    algorithm: 'sha256',
  } as never);
  writeFileSync(certFile, pems.cert);
  checker = new DnsChecker(createResolver({ servers: [dns.address], cache: false, timeoutMs: 1000 }), {
    hostname: HOST,
    client: standardClientEndpoints(HOST),
    sendingAddresses: ['127.0.0.25', '127.0.0.26', '127.0.0.27', '127.0.0.28'],
    tlsCertFile: certFile,
  });
  await new PolicyRules(tr.redis, tr.prefix).add('smtpd_client_restrictions', 'reject_rbl_client dnsbl.test');
});
after(async () => {
  await dns?.close();
  await tr?.cleanup();
  tmp?.cleanup();
});

describe('a domain', { timeout: 30_000 }, () => {
  test('published as printed: every record ok, SPF evaluated for the sending address', async () => {
    const solo = new DnsChecker(createResolver({ servers: [dns.address], cache: false }), {
      ...checker.settings,
      sendingAddresses: [],
    });
    const r = await ops.checkDomainDns('good.test', solo);
    assert.equal(r.domain, 'good.test');
    assert.deepEqual(
      r.records.filter((x) => x.status !== 'ok').map((x) => `${x.name} ${x.status} ${x.detail}`),
      [],
    );
    const kinds = new Set(r.records.map((x) => x.kind));
    assert.deepEqual([...kinds].sort(), ['dkim', 'dmarc', 'mta-sts', 'mx', 'spf', 'srv', 'tls-rpt']);
    assert.equal(r.records.filter((x) => x.kind === 'dkim').length, 2, 'RSA and Ed25519 selectors');
    assert.deepEqual(byName(r, 'good.test', 'MX').found, [`10 ${HOST}.`]);
    assert.deepEqual(byName(r, '_imaps._tcp.good.test').found, [`0 1 993 ${HOST}.`]);
  });

  test('SPF that does not permit one of the sending addresses is wrong, naming it', async () => {
    const r = await ops.checkDomainDns('good.test', checker);
    const spf = byName(r, 'good.test', 'TXT');
    assert.equal(spf.status, 'wrong');
    assert.match(spf.detail!, /does not permit 127\.0\.0\.26 \(fail\)/);
    assert.doesNotMatch(spf.detail!, /127\.0\.0\.25/);
  });

  test('records published wrong: each wrong, with the difference', async () => {
    const r = await ops.checkDomainDns('bad.test', checker);
    const st = (name: string, type?: string) => {
      const x = byName(r, name, type);
      return [x.status, x.detail];
    };
    assert.deepEqual(st('bad.test', 'MX'), ['wrong', `no MX record names ${HOST}`]);
    assert.equal(st('bad.test', 'TXT')[0], 'wrong');
    assert.match(String(st('bad.test', 'TXT')[1]), /does not permit 127\.0\.0\.25 \(fail\)/);
    const dkim = r.records.filter((x) => x.kind === 'dkim');
    assert.deepEqual(
      dkim.map((x) => x.status).sort(),
      ['missing', 'wrong'],
      'the RSA key differs, the Ed25519 one is absent',
    );
    assert.equal(
      dkim.find((x) => x.status === 'wrong')!.detail,
      'the published public key differs from the stored key',
    );
    assert.deepEqual(st('_dmarc.bad.test'), ['wrong', '2 DMARC records where one is allowed']);
    assert.deepEqual(st('_smtp._tls.bad.test'), ['wrong', 'no rua= address for the reports']);
    assert.equal(st('_mta-sts.bad.test')[0], 'wrong');
    assert.deepEqual(st('autoconfig.bad.test'), [
      'wrong',
      `points to autoconfig.hoster.example., not ${HOST}`,
    ]);
    assert.deepEqual(st('_imaps._tcp.bad.test'), ['wrong', `no record gives ${HOST} port 993`]);
    assert.deepEqual(byName(r, '_imaps._tcp.bad.test').found, [`0 1 143 ${HOST}.`]);
    assert.deepEqual(st('_submission._tcp.bad.test'), ['wrong', 'published as "not offered" (target .)']);
  });

  test('nothing published: every record missing, never wrong', async () => {
    const r = await ops.checkDomainDns('none.test', checker);
    assert.ok(r.records.length >= 13);
    assert.deepEqual(new Set(r.records.map((x) => x.status)), new Set(['missing']));
    for (const x of r.records) assert.deepEqual(x.found, []);
  });

  test('a failing DNS server: could not check, never missing', async () => {
    const r = await ops.checkDomainDns('broken.test', checker);
    for (const name of ['broken.test', '_dmarc.broken.test'])
      for (const x of r.records.filter((y) => y.name === name)) {
        assert.equal(x.status, 'unchecked', `${x.name} ${x.type}`);
        assert.match(x.detail!, /^could not check: ESERVFAIL/);
      }
  });

  test('an unknown domain is refused in one sentence', async () => {
    await assert.rejects(ops.checkDomainDns('nope.test', checker), { message: /nope\.test/ });
  });
});

describe('the server', { timeout: 30_000 }, () => {
  test('forward and reverse DNS of each sending address, blocklists, certificate', async () => {
    const r = await ops.checkServerDns(checker);
    assert.equal(r.hostname, HOST);
    assert.deepEqual(
      r.addresses.map((a) => [a.address, a.forward, a.ptr, a.status]),
      [
        ['127.0.0.25', true, [HOST], 'ok'],
        ['127.0.0.26', false, ['host-26.isp.example'], 'wrong'],
        ['127.0.0.27', false, [], 'missing'],
        ['127.0.0.28', false, [], 'unchecked'],
      ],
    );
    assert.equal(r.addresses[1]!.detail, `PTR names host-26.isp.example, not ${HOST}`);
    assert.deepEqual(
      r.dnsbl.map((l) => [l.list, l.address, l.listed]),
      [
        ['dnsbl.test', '127.0.0.25', false],
        ['dnsbl.test', '127.0.0.26', true],
        ['dnsbl.test', '127.0.0.27', false],
        ['dnsbl.test', '127.0.0.28', false],
      ],
    );
    assert.ok(r.tls.notAfter);
    assert.ok(r.tls.daysLeft! >= 29 && r.tls.daysLeft! <= 30, `${r.tls.daysLeft} days`);
  });

  test('without bind addresses, MYHOSTNAME’s own addresses are the sending ones', async () => {
    const solo = new DnsChecker(createResolver({ servers: [dns.address], cache: false }), {
      ...checker.settings,
      sendingAddresses: [],
      tlsCertFile: join(tmp.path, 'absent.pem'),
    });
    const r = await ops.checkServerDns(solo);
    assert.deepEqual(
      r.addresses.map((a) => [a.address, a.status]),
      [['127.0.0.25', 'ok']],
    );
    assert.deepEqual(r.tls, {
      notAfter: null,
      daysLeft: null,
      detail: `cannot read ${join(tmp.path, 'absent.pem')}: ENOENT`,
    });
  });

  test('a host name that does not resolve is said so', async () => {
    const lost = new DnsChecker(createResolver({ servers: [dns.address], cache: false }), {
      ...checker.settings,
      hostname: 'lost.example.test',
      sendingAddresses: [],
    });
    const r = await ops.checkServerDns(lost);
    assert.deepEqual(r.addresses, []);
    assert.equal(r.detail, 'lost.example.test has no A or AAAA record, and no SMTP_BIND_ADDRESS is set');
  });
});

test('IPv6 sending addresses are compared in their canonical form', { timeout: 30_000 }, async () => {
  const v6 = new DnsChecker(createResolver({ servers: [dns.address], cache: false }), {
    ...checker.settings,
    hostname: 'v6.example.test',
    sendingAddresses: ['2001:DB8:0:0::25'],
  });
  const r = await ops.checkServerDns(v6);
  assert.deepEqual(
    r.addresses.map((a) => [a.address, a.forward, a.ptr, a.status]),
    [['2001:db8::25', true, ['v6.example.test'], 'ok']],
  );
});

test('a DKIM record is its key only with v=DKIM1, the same k= and p=, and alone', async () => {
  const ed = dnsRecord('keys.test', 'ed', generateDkimKey('ed25519'));
  const rsa = dnsRecord('keys.test', 'rsa', generateDkimKey('rsa'));
  const p = (r: { value: string }) => /p=(\S+)$/.exec(r.value)![1]!;
  const other = p(dnsRecord('keys.test', 'x', generateDkimKey('ed25519')));
  const check = async (r: typeof ed, txt: string[]) => {
    dns.set(r.name, { TXT: txt });
    const res = await checker.checkDkimRecord(r);
    return [res.status, res.detail];
  };
  assert.deepEqual(await check(ed, [ed.value]), ['ok', undefined]);
  // other TXT records at the name are not DKIM records
  assert.deepEqual(await check(ed, ['google-site-verification=abc', ed.value]), ['ok', undefined]);
  // RFC 6376 §3.6.1: v= is optional, k= defaults to rsa
  assert.deepEqual(await check(rsa, [`p=${p(rsa)}`]), ['ok', undefined]);
  assert.deepEqual(await check(ed, [`v=DKIM1; k=rsa; p=${p(ed)}`]), [
    'wrong',
    'the published record says k=rsa where the key is ed25519',
  ]);
  assert.deepEqual(await check(ed, [`v=DKIM1; p=${p(ed)}`]), [
    'wrong',
    'the published record says k=rsa (no k=) where the key is ed25519',
  ]);
  assert.deepEqual(await check(ed, [`v=DKIM2; k=ed25519; p=${p(ed)}`]), [
    'wrong',
    'the published record says v=DKIM2 where DKIM1 is required',
  ]);
  assert.deepEqual(await check(ed, [`v=DKIM1; k=ed25519; p=${other}`]), [
    'wrong',
    'the published public key differs from the stored key',
  ]);
  // verifiers such as mailauth use the first DKIM record only, whichever DNS sends first
  assert.deepEqual(await check(ed, [`v=DKIM1; k=ed25519; p=${other}`, ed.value]), [
    'wrong',
    `more than one DKIM record at ${ed.name}`,
  ]);
});
