// Mail clients configuring themselves: Thunderbird's autoconfig and Outlook's
// autodiscover; other servers finding our MTA-STS policy. The client files are
// fetched with curl as the clients do (by the name they would ask, through
// the webmail's HTTPS port), the XML read by a real XML parser (Python's ElementTree).
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { selfSignedCertificate } from '@mailyard/config';
import { createResolver } from '@mailyard/dns';
import { httpsPolicyFetcher, parsePolicy } from '@mailyard/service-outbound-relay';
import { tempDir } from '@mailyard/testkit';
import { HOST, startWebmailTestbed, type WebmailTestbed } from './webmail-harness.js';
import { WebClient } from './web-client.js';

let t: WebmailTestbed;
let tmp: ReturnType<typeof tempDir>;
let caFile: string;
before(async () => {
  t = await startWebmailTestbed({
    webmail: { client_hostname: 'imap.example.test', client_submissions_port: 1465 },
  });
  tmp = tempDir();
  caFile = join(tmp.path, 'ca.pem');
  writeFileSync(caFile, t.ca);
});
after(async () => {
  await t?.close();
  tmp?.cleanup();
});

/**
 * curl over HTTPS to the webmail, as asked for `host` (the name a client would use).
 * Asynchronous: the webmail answers from this very process.
 */
async function curl(host: string, path: string, opts: { data?: string; type?: string } = {}) {
  const port = t.webmail.port;
  const args = [
    '-sS',
    '--max-time',
    '20',
    '--cacert',
    caFile,
    '--resolve',
    `${HOST}:${port}:127.0.0.1`,
    '-H',
    `Host: ${host}`,
    '-w',
    '\n%{http_code} %{content_type}',
  ];
  if (opts.data !== undefined)
    args.push('-X', 'POST', '-H', `Content-Type: ${opts.type ?? 'text/xml'}`, '--data-binary', '@-');
  args.push(`https://${HOST}:${port}${path}`);
  const stdout = await new Promise<string>((resolve, reject) => {
    const child = execFile('curl', args, { encoding: 'utf8', timeout: 30_000 }, (err, out, stderr) =>
      err ? reject(new Error(`curl: ${stderr || err.message}`)) : resolve(out),
    );
    child.stdin!.end(opts.data ?? '');
  });
  const i = stdout.lastIndexOf('\n');
  const [status, type] = stdout.slice(i + 1).split(' ');
  return { status: Number(status), type: type ?? '', body: stdout.slice(0, i) };
}

/** Parses XML with ElementTree (well-formedness checked) and flattens it to tag paths → text. */
function parseXml(text: string): [string, string][] {
  const script = `
import sys, json, xml.etree.ElementTree as E
root = E.fromstring(sys.stdin.read())
out = []
def walk(e, path):
    tag = e.tag.split('}')[-1]
    attrs = ''.join('[%s=%s]' % kv for kv in sorted(e.attrib.items()))
    p = path + '/' + tag + attrs
    if len(e) == 0: out.append([p, (e.text or '').strip()])
    for c in e: walk(c, p)
walk(root, '')
print(json.dumps(out))`;
  const r = spawnSync('python3', ['-c', script], { input: text, encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as [string, string][];
}

test(
  'Thunderbird autoconfig: hosts and ports from the config, for a local domain',
  { timeout: 60_000 },
  async () => {
    const r = await curl(
      'autoconfig.example.test',
      '/mail/config-v1.1.xml?emailaddress=alice%40example.test',
    );
    assert.equal(r.status, 200, r.body);
    assert.match(r.type, /^application\/xml/);
    const x = parseXml(r.body);
    const get = (p: string) => x.filter(([k]) => k === p).map(([, v]) => v);
    const base = '/clientConfig[version=1.1]/emailProvider[id=example.test]';
    assert.deepEqual(get(`${base}/domain`), ['example.test']);
    assert.deepEqual(get(`${base}/incomingServer[type=imap]/hostname`), [
      'imap.example.test',
      'imap.example.test',
    ]);
    assert.deepEqual(get(`${base}/incomingServer[type=imap]/port`), ['993', '143']);
    assert.deepEqual(get(`${base}/incomingServer[type=imap]/socketType`), ['SSL', 'STARTTLS']);
    assert.deepEqual(get(`${base}/incomingServer[type=pop3]/port`), ['995']);
    assert.deepEqual(get(`${base}/outgoingServer[type=smtp]/port`), ['1465', '587']);
    assert.deepEqual(get(`${base}/outgoingServer[type=smtp]/username`), ['%EMAILADDRESS%', '%EMAILADDRESS%']);
    // the well-known path on the domain itself, the domain taken from the host name
    const wk = await curl('example.test', '/.well-known/autoconfig/mail/config-v1.1.xml');
    assert.equal(wk.status, 200);
    assert.equal(wk.body, r.body);
  },
);

test('autoconfig for a domain that is not ours is 404; a bad address 400', { timeout: 60_000 }, async () => {
  assert.equal((await curl('autoconfig.elsewhere.example', '/mail/config-v1.1.xml')).status, 404);
  assert.equal(
    (await curl('autoconfig.example.test', '/mail/config-v1.1.xml?emailaddress=eve%40elsewhere.example'))
      .status,
    404,
  );
  assert.equal(
    (await curl('autoconfig.example.test', '/mail/config-v1.1.xml?emailaddress=not-an-address')).status,
    400,
  );
});

const request = (address: string) => `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>${address}</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>`;

test(
  'Outlook autodiscover (POX): IMAP, POP3 and SMTP settings for the address',
  { timeout: 60_000 },
  async () => {
    const r = await curl('autodiscover.example.test', '/autodiscover/autodiscover.xml', {
      data: request('Alice@Example.TEST'),
    });
    assert.equal(r.status, 200, r.body);
    const x = parseXml(r.body);
    const protocols = x.filter(([k]) => k.endsWith('/Protocol/Type')).map(([, type]) => type);
    assert.deepEqual(protocols, ['IMAP', 'POP3', 'SMTP']);
    const values = (tag: string) => x.filter(([k]) => k.endsWith(`/Protocol/${tag}`)).map(([, v]) => v);
    assert.deepEqual(values('Server'), ['imap.example.test', 'imap.example.test', 'imap.example.test']);
    assert.deepEqual(values('Port'), ['993', '995', '1465']);
    assert.deepEqual(values('SSL'), ['on', 'on', 'on']);
    assert.deepEqual(values('LoginName'), ['Alice@example.test', 'Alice@example.test', 'Alice@example.test']);
    // unknown domains are refused
    assert.equal(
      (
        await curl('autodiscover.example.test', '/autodiscover/autodiscover.xml', {
          data: request('eve@elsewhere.example'),
        })
      ).status,
      404,
    );
  },
);

test(
  'autodiscover bodies: no DTD, no entities, bounded, an address required',
  { timeout: 60_000 },
  async () => {
    const xxe = `<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Autodiscover><Request><EMailAddress>alice@example.test&x;</EMailAddress></Request></Autodiscover>`;
    const r = await curl('autodiscover.example.test', '/autodiscover/autodiscover.xml', { data: xxe });
    assert.equal(r.status, 400);
    assert.doesNotMatch(r.body, /root:/);
    assert.match(r.body, /document type declarations are not accepted/);
    const big = request('alice@example.test') + ' '.repeat(20_000);
    assert.equal(
      (await curl('autodiscover.example.test', '/autodiscover/autodiscover.xml', { data: big })).status,
      413,
    );
    const none = await curl('autodiscover.example.test', '/autodiscover/autodiscover.xml', {
      data: '<Autodiscover/>',
    });
    assert.equal(none.status, 400);
    // ActiveSync is not offered
    const mobile = request('alice@example.test').replace(
      'outlook/responseschema/2006a',
      'mobilesync/responseschema/2006',
    );
    assert.equal(
      (await curl('autodiscover.example.test', '/autodiscover/autodiscover.xml', { data: mobile })).status,
      404,
    );
  },
);

test('autodiscover v1.0 JSON points Outlook at the XML endpoint', { timeout: 60_000 }, async () => {
  const c = new WebClient(t.webmail.port, t.ca);
  const r = await c.get('/autodiscover/autodiscover.json/v1.0/alice@example.test?Protocol=AutodiscoverV1');
  assert.equal(r.status, 200);
  assert.deepEqual(r.json, {
    Protocol: 'AutodiscoverV1',
    Url: 'https://autodiscover.example.test/autodiscover/autodiscover.xml',
  });
  const q = await c.get('/autodiscover/autodiscover.json?Email=alice%40example.test&Protocol=AutodiscoverV1');
  assert.deepEqual(q.json, r.json);
  const sync = await c.get('/autodiscover/autodiscover.json/v1.0/alice@example.test?Protocol=ActiveSync');
  assert.deepEqual([sync.status, sync.json.ErrorCode], [400, 'ProtocolNotSupported']);
  const other = await c.get(
    '/autodiscover/autodiscover.json/v1.0/eve@elsewhere.example?Protocol=AutodiscoverV1',
  );
  assert.equal(other.status, 404);
});

test('the MTA-STS policy, fetched as our own outbound relay fetches one', { timeout: 60_000 }, async () => {
  // a webmail whose certificate names mta-sts.example.test, as the CNAME makes it
  const pair = selfSignedCertificate('mta-sts.example.test');
  writeFileSync(join(tmp.path, 'sts.pem'), pair.cert);
  writeFileSync(join(tmp.path, 'sts.key'), pair.key);
  const sts = await t.another({
    tls_cert_file: join(tmp.path, 'sts.pem'),
    tls_key_file: join(tmp.path, 'sts.key'),
    mta_sts_mode: 'enforce',
  });
  t.p.dns.set('mta-sts.example.test', { A: ['127.0.0.1'] });
  const fetch = httpsPolicyFetcher({
    resolver: createResolver({ servers: [t.p.env.DNS_SERVERS!], cache: false }),
    ca: pair.cert,
    port: sts.port,
  });
  const policy = parsePolicy(await fetch('example.test'));
  assert.deepEqual(policy, { mode: 'enforce', mx: [HOST], maxAge: 604_800 });
  // a name that is not one of ours
  assert.equal((await curl('mta-sts.elsewhere.example', '/.well-known/mta-sts.txt')).status, 404);
  assert.equal((await curl('example.test', '/.well-known/mta-sts.txt')).status, 404);
});
