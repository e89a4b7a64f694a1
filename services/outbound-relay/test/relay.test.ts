import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { after, before, describe, test } from 'node:test';
import { createResolver } from '@mailyard/dns';
import { DeferredIndex } from '@mailyard/queue-admin';
import { queueDepths, waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { httpsPolicyFetcher } from '../src/index.js';
import {
  counterValue,
  entryOf,
  envelope,
  freePort,
  queueOutbound,
  simpleMessage,
  startRelay,
  startRemoteMta,
  tlsPair,
  type RelayHandle,
  type RemoteMta,
} from './helpers.js';

// Remote MTAs: 127.0.0.2 (mx1.remote.test, pref 10), 127.0.0.3 (mx2.remote.test, pref 20),
// 127.0.0.4 (strict.test: no SMTPUTF8/8BITMIME, SIZE 2000), 127.0.0.5 (mx.secure.test,
// MTA-STS enforce, certificate nobody trusts), 127.0.0.6 (mx.flaky.test: 421 greeting),
// all on one port.
let p: Platform;
let relay: RelayHandle;
let startMain: (overrides?: Record<string, unknown>) => Promise<RelayHandle>;
let port: number;
let mx1: RemoteMta;
let mx2: RemoteMta;
let strict: RemoteMta;
let secure: RemoteMta;
let flaky: RemoteMta;
let v6: RemoteMta;
let plain: RemoteMta;
let https: Server;

before(async () => {
  port = await freePort();
  const stsCert = tlsPair('mta-sts.secure.test');
  https = createHttpsServer({ key: stsCert.key, cert: stsCert.cert }, (req, res) => {
    if (req.url === '/.well-known/mta-sts.txt') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('version: STSv1\r\nmode: enforce\r\nmx: mx.secure.test\r\nmax_age: 86400\r\n');
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((r) => https.listen(0, '127.0.0.1', () => r()));
  const httpsPort = (https.address() as { port: number }).port;

  p = await startPlatform({
    zone: {
      'remote.test': {
        MX: [
          { priority: 10, exchange: 'mx1.remote.test' },
          { priority: 20, exchange: 'mx2.remote.test' },
        ],
      },
      'mx1.remote.test': { A: ['127.0.0.2'] },
      // mx1 alone: its 4xx is the final server's, retried on the schedule (a 4xx at mx1
      // of remote.test sends the recipients on to mx2 in the same attempt)
      'single.test': { MX: [{ priority: 10, exchange: 'mx1.remote.test' }] },
      'mx2.remote.test': { A: ['127.0.0.3'] },
      'second.test': {
        MX: [
          { priority: 10, exchange: 'mx.flaky.test' },
          { priority: 20, exchange: 'mx2.remote.test' },
        ],
      },
      'mx.flaky.test': { A: ['127.0.0.6'] },
      // no MX: the domain's own address is the implicit MX (RFC 5321 §5.1)
      'implicit.test': { A: ['127.0.0.3'] },
      'strict.test': { MX: [{ priority: 0, exchange: 'mx.strict.test' }] },
      'mx.strict.test': { A: ['127.0.0.4'] },
      'nullmx.test': { MX: [{ priority: 0, exchange: '.' }] },
      'secure.test': { MX: [{ priority: 10, exchange: 'mx.secure.test' }] },
      'mx.secure.test': { A: ['127.0.0.5'] },
      '_mta-sts.secure.test': { TXT: ['v=STSv1; id=20260101'] },
      'mta-sts.secure.test': { A: ['127.0.0.1'] },
      'v6.test': { MX: [{ priority: 10, exchange: 'mx.v6.test' }] },
      'mx.v6.test': { AAAA: ['::1'] },
      'plain.test': { MX: [{ priority: 10, exchange: 'mx.plain.test' }] },
      'mx.plain.test': { A: ['127.0.0.13'] },
    },
  });
  await addAccount(p.directory, 'alice@example.test');
  mx1 = await startRemoteMta('127.0.0.2', port);
  mx2 = await startRemoteMta('127.0.0.3', port);
  strict = await startRemoteMta('127.0.0.4', port, { hideSmtpUtf8: true, hide8BitMime: true, size: 2000 });
  secure = await startRemoteMta('127.0.0.5', port, { tls: tlsPair('mx.secure.test') });
  flaky = await startRemoteMta('127.0.0.6', port, {
    greeting: { code: 421, message: '4.3.2 Service shutting down' },
  });
  v6 = await startRemoteMta('::1', port);
  plain = await startRemoteMta('127.0.0.13', port, { noStartTls: true });
  const resolver = createResolver({ servers: [p.env.DNS_SERVERS!] });
  startMain = (overrides = {}) =>
    startRelay(
      p,
      { outbound_port: port, outbound_retry_schedule: '200ms,400ms', delay_warning_time: 0, ...overrides },
      { mtaStsFetcher: httpsPolicyFetcher({ resolver, ca: stsCert.cert, port: httpsPort }) },
    );
  relay = await startMain();
});

after(async () => {
  await relay?.stop();
  for (const m of [mx1, mx2, strict, secure, flaky, v6, plain]) await m?.close();
  await new Promise<void>((r) => https?.close(() => r()));
  await p?.close();
});

const receivedBy = (mta: RemoteMta, subject: string) =>
  mta.received.find((m) => m.data.toString().includes(`Subject: ${subject}\r\n`));

/** The DSNs in alice's INBOX, newest last. */
const bounces = () => p.inbox('alice@example.test').map((f) => readFileSync(f, 'utf8'));
const bounceFor = (subject: string) => bounces().find((b) => b.includes(`Subject: ${subject}\r\n`));

/**
 * The leaf parts of a message as Python's email package reads them: content type,
 * transfer encoding, charset and the decoded payload.
 */
function mimeParts(
  raw: Buffer,
): { type: string; cte: string | null; charset: string | null; payload: Buffer }[] {
  const script = [
    'import sys, json, email, base64',
    'from email import policy',
    'm = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.compat32)',
    'print(json.dumps([{"type": p.get_content_type(), "cte": p.get("Content-Transfer-Encoding"),',
    '  "charset": p.get_content_charset(), "payload": base64.b64encode(p.get_payload(decode=True)).decode()}',
    '  for p in m.walk() if not p.is_multipart()]))',
  ].join('\n');
  const r = spawnSync('python3', ['-c', script], { input: raw, timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr?.toString());
  return (
    JSON.parse(r.stdout.toString()) as {
      type: string;
      cte: string | null;
      charset: string | null;
      payload: string;
    }[]
  ).map((x) => ({ ...x, payload: Buffer.from(x.payload, 'base64') }));
}

describe('delivery', () => {
  test('delivered to the preferred MX over TLS, line endings and dots intact', async () => {
    const body = 'line one\nline two\r\n.leading dot\r\n..two dots\r\n.\nend\r\n';
    const env = envelope('alice@example.test', ['bob@remote.test']);
    await queueOutbound(
      p,
      env,
      simpleMessage('alice@example.test', 'bob@remote.test', 'plain-delivery', body),
    );
    const got = await waitFor(() => receivedBy(mx1, 'plain-delivery'), { what: 'delivery at mx1' });
    assert.deepEqual(got.to, ['bob@remote.test']);
    assert.equal(got.from, 'alice@example.test');
    assert.ok(got.secure, 'opportunistic STARTTLS was used');
    const text = got.data.toString();
    assert.ok(
      text.endsWith('line one\r\nline two\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n'),
      JSON.stringify(text),
    );
    assert.ok(!/[^\r]\n/.test(text), 'no bare LF reached the remote server');
    await waitFor(
      async () =>
        (await counterValue(relay.rt, 'mailyard_outbound_relay_deliveries_total', { tls: 'yes' })) >= 1,
    );
    assert.ok(
      (await counterValue(relay.rt, 'mailyard_outbound_relay_attempts_total', {
        result: 'delivered',
        domain: 'remote.test',
      })) >= 1,
    );
  });

  test("our verdict headers and a webmail draft's stay home: none is sent", async () => {
    const msg = simpleMessage('alice@example.test', 'bob@remote.test', 'verdict-headers');
    // a draft saved by the webmail, sent from a desktop client as it stands
    const withVerdicts =
      'X-Mailyard-Policy: inbox; check_virus=clean\r\nX-Mailyard-Bulk: yes\r\n' +
      `X-Mailyard-Draft: yes\r\nX-Mailyard-Origin: reply; uid=7; folder=SU5CT1g\r\n${msg}`;
    await queueOutbound(p, envelope('alice@example.test', ['bob@remote.test']), withVerdicts);
    const got = await waitFor(() => receivedBy(mx1, 'verdict-headers'), { what: 'delivery at mx1' });
    const text = got.data.toString();
    assert.doesNotMatch(text, /X-Mailyard-/i);
    assert.ok(text.endsWith(msg), 'the rest of the message intact');
  });

  test('without STARTTLS on offer the message goes in clear, and the TLS share says so', async () => {
    const before = await counterValue(relay.rt, 'mailyard_outbound_relay_deliveries_total', { tls: 'no' });
    await queueOutbound(
      p,
      envelope('alice@example.test', ['hal@plain.test']),
      simpleMessage('alice@example.test', 'hal@plain.test', 'no-starttls'),
    );
    const got = await waitFor(() => receivedBy(plain, 'no-starttls'), { what: 'delivery in clear' });
    assert.equal(got.secure, false);
    await waitFor(
      async () =>
        (await counterValue(relay.rt, 'mailyard_outbound_relay_deliveries_total', { tls: 'no' })) > before,
      { what: 'the cleartext delivery counted' },
    );
  });

  test('queue depths are exported per queue', async () => {
    const text = await relay.rt.registry.metrics();
    assert.match(text, /mailyard_outbound_relay_queue_depth_messages\{queue="outbound"\} \d+/);
    assert.match(text, /mailyard_outbound_relay_queue_depth_messages\{queue="outbound\.retry\.200ms"\} \d+/);
    assert.match(text, /mailyard_outbound_relay_queue_depth_messages\{queue="outbound\.retry\.400ms"\} \d+/);
  });

  test('a domain without MX gets mail at its own address', async () => {
    await queueOutbound(
      p,
      envelope('alice@example.test', ['carol@implicit.test']),
      simpleMessage('alice@example.test', 'carol@implicit.test', 'implicit-mx'),
    );
    await waitFor(() => receivedBy(mx2, 'implicit-mx'), { what: 'delivery at the implicit MX' });
  });

  test('a recipient at an address literal gets the mail at that address, without DNS', async () => {
    // RFC 5321 §4.1.3: what msa (and mta-inbound, for mynetworks) accept as user@[address]
    for (const [rcpt, mta, subject] of [
      ['hal@[127.0.0.2]', mx1, 'literal-v4'],
      ['ivy@[IPv6:::1]', v6, 'literal-v6'],
    ] as const) {
      await queueOutbound(
        p,
        envelope('alice@example.test', [rcpt]),
        simpleMessage('alice@example.test', rcpt, subject),
      );
      await waitFor(() => receivedBy(mta, subject), { what: `delivery to ${rcpt}` });
      assert.deepEqual(receivedBy(mta, subject)!.to, [rcpt]);
    }
    // an IPv6 address needs its tag: [::1] is no address literal, and no name either
    await queueOutbound(
      p,
      envelope('alice@example.test', ['una@[::1]']),
      simpleMessage('alice@example.test', 'una@[::1]', 'literal-untagged'),
    );
    const dsn = await waitFor(() => bounceFor('literal-untagged'), { what: 'the bounce for [::1]' });
    assert.match(dsn, /Status: 5\.1\.2\r\n/);
    assert.equal(receivedBy(v6, 'literal-untagged'), undefined);
  });

  test('an address literal of a family INET_PROTOCOLS leaves out bounces at once', async () => {
    await relay.stop();
    const v4only = await startMain({ inet_protocols: 'ipv4' });
    try {
      await queueOutbound(
        p,
        envelope('alice@example.test', ['ivy@[IPv6:::1]']),
        simpleMessage('alice@example.test', 'ivy@[IPv6:::1]', 'literal-v6-off'),
      );
      const dsn = await waitFor(() => bounceFor('literal-v6-off'), {
        what: 'the bounce for an IPv6 literal',
      });
      assert.match(dsn, /Status: 5\.4\.4\r\n/);
      assert.match(dsn, /is an IPv6 address, and this server sends over ipv4 only/);
      assert.equal(receivedBy(v6, 'literal-v6-off'), undefined);
    } finally {
      await v4only.stop();
      relay = await startMain();
    }
  });

  test('an MX with only an IPv6 address is reached over IPv6', async () => {
    await queueOutbound(
      p,
      envelope('alice@example.test', ['gil@v6.test']),
      simpleMessage('alice@example.test', 'gil@v6.test', 'over-ipv6'),
    );
    await waitFor(() => receivedBy(v6, 'over-ipv6'), { what: 'delivery over IPv6' });
  });

  test('next MX is used when the first greets with 421', async () => {
    await queueOutbound(
      p,
      envelope('alice@example.test', ['dave@second.test']),
      simpleMessage('alice@example.test', 'dave@second.test', 'next-mx'),
    );
    await waitFor(() => receivedBy(mx2, 'next-mx'), { what: 'delivery at the second MX' });
    assert.ok(flaky.sessions >= 1, 'the first MX was tried');
  });

  test('next MX is used when the first refuses the connection', async () => {
    await mx1.close();
    try {
      await queueOutbound(
        p,
        envelope('alice@example.test', ['erin@remote.test']),
        simpleMessage('alice@example.test', 'erin@remote.test', 'mx1-down'),
      );
      await waitFor(() => receivedBy(mx2, 'mx1-down'), { what: 'delivery at mx2' });
    } finally {
      mx1 = await startRemoteMta('127.0.0.2', port);
    }
  });
});

describe('retries', () => {
  test('4xx from the only MX is retried on the schedule until it accepts', async () => {
    mx1.behaviour.rcpt = (addr, n) =>
      addr === 'retry@single.test' && n <= 2
        ? { code: 451, message: '4.7.1 Greylisted, try again later' }
        : undefined;
    const env = envelope('alice@example.test', ['retry@single.test']);
    const index = new DeferredIndex(p.redis.redis);
    await queueOutbound(p, env, simpleMessage('alice@example.test', 'retry@single.test', 'greylisted'));
    const entry = await waitFor(() => entryOf(index, env.queueId), { what: 'deferred index entry' });
    // (a slow poll may first see the second deferral)
    assert.ok(entry.attempts === 1 || entry.attempts === 2);
    assert.match(entry.lastError ?? '', /451 4\.7\.1 Greylisted/);
    assert.equal(entry.queue, entry.attempts === 1 ? 'outbound.retry.200ms' : 'outbound.retry.400ms');
    const got = await waitFor(() => receivedBy(mx1, 'greylisted'), { what: 'delivery after retries' });
    assert.deepEqual(got.to, ['retry@single.test']);
    assert.equal(mx1.rcptAttempts.get('retry@single.test'), 3);
    assert.equal(await entryOf(index, env.queueId), null, 'index entry removed once the message came back');
    assert.equal(bounceFor('greylisted'), undefined);
  });

  test('120 recipients go in transactions of 50 on one session; none waits for a retry', async () => {
    const rcpts = Array.from({ length: 120 }, (_, i) => `many${i}@remote.test`);
    await queueOutbound(
      p,
      envelope('alice@example.test', rcpts),
      simpleMessage('alice@example.test', rcpts[0]!, 'many-rcpts'),
    );
    const copies = () => mx1.received.filter((m) => m.data.toString().includes('Subject: many-rcpts'));
    await waitFor(() => copies().length === 3, { what: 'three transactions' });
    assert.deepEqual(
      copies().map((c) => c.to.length),
      [50, 50, 20],
    );
    assert.deepEqual(
      copies()
        .flatMap((c) => c.to)
        .sort(),
      [...rcpts].sort(),
    );
    assert.equal(bounceFor('many-rcpts'), undefined);
  });

  test('552 to RCPT is "too many recipients" (RFC 5321 §4.5.3.1.10): retried, not bounced', async () => {
    mx1.behaviour.rcpt = (addr, n) =>
      addr === 'crowd@single.test' && n === 1 ? { code: 552, message: 'Too many recipients' } : undefined;
    await queueOutbound(
      p,
      envelope('alice@example.test', ['crowd@single.test']),
      simpleMessage('alice@example.test', 'crowd@single.test', 'rcpt-552'),
    );
    const got = await waitFor(() => receivedBy(mx1, 'rcpt-552'), { what: 'delivery at the retry' });
    assert.deepEqual(got.to, ['crowd@single.test']);
    assert.equal(mx1.rcptAttempts.get('crowd@single.test'), 2);
    assert.equal(bounceFor('rcpt-552'), undefined);
  });

  test('only the deferred recipient is retried; the delivered one is not sent twice', async () => {
    mx1.behaviour.rcpt = (addr, n) =>
      addr === 'later@single.test' && n === 1 ? { code: 450, message: '4.2.0 Mailbox busy' } : undefined;
    await queueOutbound(
      p,
      envelope('alice@example.test', ['now@single.test', 'later@single.test']),
      simpleMessage('alice@example.test', 'now@single.test', 'split-retry'),
    );
    await waitFor(
      () => mx1.received.filter((m) => m.data.toString().includes('Subject: split-retry')).length === 2,
      {
        what: 'two deliveries',
      },
    );
    const copies = mx1.received.filter((m) => m.data.toString().includes('Subject: split-retry'));
    assert.deepEqual(
      copies.map((c) => c.to),
      [['now@single.test'], ['later@single.test']],
    );
  });

  test('a message queued again under its queue id while the first is being sent: one copy each', async () => {
    // as delivery queues a forward again when a run of its message is repeated between the
    // forward's confirm and its record: the first copy held at the receiver, unanswered
    let release = () => {};
    const answered = new Promise<void>((r) => (release = r));
    let arrived = 0;
    mx1.behaviour.data = async (msg) => {
      if (!msg.data.includes('Subject: queued-again')) return undefined;
      arrived++;
      await answered;
      return undefined;
    };
    try {
      const index = new DeferredIndex(p.redis.redis);
      const env = envelope('alice@example.test', ['again-1@single.test', 'again-2@single.test']);
      const message = simpleMessage('alice@example.test', 'again-1@single.test', 'queued-again');
      await queueOutbound(p, env, message);
      await waitFor(() => arrived === 1, { what: 'the first copy at the receiver' });
      await queueOutbound(p, env, message);
      // the second finds both recipients being sent to by the first: deferred, not sent
      const entry = await waitFor(() => entryOf(index, env.queueId), { what: 'the second copy deferred' });
      assert.equal(entry.lastError, 'another delivery to this recipient is in progress');
      assert.equal(entry.attempts, 0, 'no attempt counted');
      release();
      // its retry (no longer waiting, nor in outbound or a delay queue) found both settled
      await waitFor(
        async () =>
          (await entryOf(index, env.queueId)) === null &&
          [...(await queueDepths(p.vhost.name))].every(([q, n]) => !q.startsWith('outbound') || n === 0),
        { what: 'the retry done with' },
      );
      const copies = mx1.received.filter((m) => m.data.includes('Subject: queued-again'));
      assert.deepEqual(
        copies.map((c) => c.to),
        [['again-1@single.test', 'again-2@single.test']],
      );
    } finally {
      release();
      delete mx1.behaviour.data;
    }
  });
});

describe('bounces', () => {
  test('5xx: one DSN in the local sender’s Maildir, with the remote status', async () => {
    mx1.behaviour.rcpt = (addr) =>
      addr === 'nobody@remote.test' ? { code: 550, message: '5.1.1 No such user here' } : undefined;
    const env = envelope('alice@example.test', ['nobody@remote.test']);
    const verdicts = 'X-Mailyard-Policy: inbox; check_virus=clean\r\nX-Mailyard-Bulk: yes\r\n';
    await queueOutbound(
      p,
      env,
      verdicts + simpleMessage('alice@example.test', 'nobody@remote.test', 'to-nobody'),
    );
    const dsn = await waitFor(
      () => bounces().find((b) => b.includes(`X-Mailyard-Queue-ID: ${env.queueId}`)),
      { what: 'DSN in the Maildir' },
    );
    assert.match(dsn, /^Return-Path: <>\r\n/);
    assert.match(dsn, /^From: Mail Delivery System <MAILER-DAEMON@mx\.mailyard\.test>\r$/m);
    assert.match(dsn, /Content-Type: multipart\/report; report-type=delivery-status;/);
    assert.match(dsn, /Content-Type: message\/delivery-status\r\n/);
    assert.match(
      dsn,
      /Final-Recipient: rfc822; nobody@remote\.test\r\nAction: failed\r\nStatus: 5\.1\.1\r\n/,
    );
    assert.match(dsn, /Remote-MTA: dns; mx1\.remote\.test\r\n/);
    assert.match(dsn, /Diagnostic-Code: smtp; .*550 5\.1\.1 No such user here/);
    assert.match(
      dsn,
      /Content-Type: text\/rfc822-headers\r\n(.*\r\n)*?\r\nFrom: <alice@example\.test>\r\nTo: <nobody@remote\.test>\r\nSubject: to-nobody\r\n/,
    );
    assert.ok(!dsn.includes('Hello.'), 'only the headers of the original are returned');
    assert.doesNotMatch(dsn, /X-Mailyard-(Policy|Bulk)/, 'our verdict headers are not returned');
    // RFC 3461 §6.3 (d): no ORCPT was given, so no Original-Recipient
    assert.doesNotMatch(dsn, /Original-Recipient/);
    assert.equal(bounces().filter((b) => b.includes(`X-Mailyard-Queue-ID: ${env.queueId}`)).length, 1);
  });

  test('2xx, 4xx and 5xx to the RCPTs of one session: the DSN names the 5xx alone, the 4xx is retried', async () => {
    mx1.behaviour.rcpt = (addr, n) =>
      addr === 'refused@single.test'
        ? { code: 550, message: '5.1.1 No such user here' }
        : addr === 'busy@single.test' && n === 1
          ? { code: 451, message: '4.3.0 Try again later' }
          : undefined;
    const env = envelope('alice@example.test', ['ok@single.test', 'busy@single.test', 'refused@single.test']);
    await queueOutbound(p, env, simpleMessage('alice@example.test', 'ok@single.test', 'mixed-replies'));
    const copies = () => mx1.received.filter((m) => m.data.toString().includes('Subject: mixed-replies'));
    await waitFor(() => copies().length === 2, { what: 'the first copy and the retry delivered' });
    assert.deepEqual(
      copies().map((c) => c.to),
      [['ok@single.test'], ['busy@single.test']],
    );
    const dsns = () => bounces().filter((b) => b.includes(`X-Mailyard-Queue-ID: ${env.queueId}`));
    const dsn = await waitFor(() => dsns()[0], { what: 'DSN in the Maildir' });
    assert.deepEqual(
      [...dsn.matchAll(/Final-Recipient: rfc822; (\S+)/g)].map((m) => m[1]),
      ['refused@single.test'],
    );
    assert.equal(dsns().length, 1, 'one DSN');
  });

  test('a null-sender message is never bounced', async () => {
    mx1.behaviour.rcpt = (addr) =>
      addr === 'gone@remote.test' ? { code: 550, message: '5.1.1 No such user here' } : undefined;
    const before = await counterValue(relay.rt, 'mailyard_outbound_relay_attempts_total', {
      result: 'bounced',
    });
    const dsnBefore = await counterValue(relay.rt, 'mailyard_outbound_relay_dsn_total');
    await queueOutbound(
      p,
      envelope('', ['gone@remote.test']),
      simpleMessage('', 'gone@remote.test', 'null-sender'),
    );
    await waitFor(
      async () =>
        (await counterValue(relay.rt, 'mailyard_outbound_relay_attempts_total', { result: 'bounced' })) >
        before,
      { what: 'the bounce verdict' },
    );
    assert.equal(await counterValue(relay.rt, 'mailyard_outbound_relay_dsn_total'), dsnBefore);
    assert.equal(bounceFor('null-sender'), undefined);
  });

  test('null MX and NXDOMAIN bounce at once, without a connection', async () => {
    const a = envelope('alice@example.test', ['x@nullmx.test']);
    const b = envelope('alice@example.test', ['y@nxdomain.test']);
    await queueOutbound(p, a, simpleMessage('alice@example.test', 'x@nullmx.test', 'null-mx'));
    await queueOutbound(p, b, simpleMessage('alice@example.test', 'y@nxdomain.test', 'nx-domain'));
    const da = await waitFor(() => bounces().find((m) => m.includes(`X-Mailyard-Queue-ID: ${a.queueId}`)));
    const db = await waitFor(() => bounces().find((m) => m.includes(`X-Mailyard-Queue-ID: ${b.queueId}`)));
    assert.match(da, /Status: 5\.1\.10\r\n/);
    assert.match(db, /Status: 5\.1\.2\r\n/);
  });

  test('UTF-8 message to a server without SMTPUTF8: bounced with 5.6.7', async () => {
    const env = envelope('alice@example.test', ['jörg@strict.test'], { smtputf8: true, body: '8BITMIME' });
    await queueOutbound(
      p,
      env,
      simpleMessage('alice@example.test', 'jörg@strict.test', 'utf8-needed', 'Grüße\r\n'),
    );
    const dsn = await waitFor(() => bounces().find((m) => m.includes(`X-Mailyard-Queue-ID: ${env.queueId}`)));
    assert.match(dsn, /Status: 5\.6\.7\r\n/);
    assert.equal(strict.received.length, 0);
  });

  test('8-bit multipart message to a server without 8BITMIME: converted to 7 bit, parts intact', async () => {
    const text = 'Grüße aus Köln, ça va?\r\n.dot line\r\ntrailing space \r\n' + 'ä'.repeat(60) + '\r\n';
    const blob = Buffer.from([...Array.from({ length: 200 }, (_, i) => 0x80 + (i % 120)), 0x0d, 0x0a]);
    const message = Buffer.concat([
      Buffer.from(
        'From: <alice@example.test>\r\nTo: <kim@strict.test>\r\nSubject: eight-bit-multipart\r\n' +
          'Message-ID: <eightbitmultipart@test>\r\nMIME-Version: 1.0\r\n' +
          'Content-Type: multipart/mixed; boundary="b1"\r\n\r\npreamble\r\n--b1\r\n' +
          'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n' +
          text +
          '--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n\r\n',
      ),
      blob,
      Buffer.from('--b1\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--b1--\r\n'),
    ]);
    const env = envelope('alice@example.test', ['kim@strict.test'], { body: '8BITMIME' });
    await queueOutbound(p, env, message);
    const got = await waitFor(() => receivedBy(strict, 'eight-bit-multipart'), {
      what: 'delivery at strict',
    });
    assert.ok(!got.data.some((b) => b > 0x7f), 'only 7-bit data was sent');
    assert.equal(got.params.body, undefined, 'no BODY=8BITMIME');
    const parts = mimeParts(got.data);
    assert.deepEqual(
      parts.map((x) => [x.type, x.cte]),
      [
        ['text/plain', 'quoted-printable'],
        ['application/octet-stream', 'base64'],
        ['text/plain', null],
      ],
    );
    const original = mimeParts(message);
    assert.ok(original[0]!.payload.toString('utf8').startsWith('Grüße aus Köln'));
    assert.deepEqual(
      parts.map((x) => x.payload),
      original.map((x) => x.payload),
      'every part decodes to what it was',
    );
    const head = (b: Buffer) => b.subarray(0, b.indexOf('\r\n\r\n')).toString('latin1');
    assert.equal(head(got.data), head(message), 'the message header is unchanged');
  });

  test('7-bit message with a long line in a binary part, to a server without 8BITMIME: lines fit', async () => {
    const long = 'word '.repeat(240) + 'end'; // 1203 octets on one line (the server takes 2000 in all)
    const message = Buffer.from(
      'From: <alice@example.test>\r\nTo: <kim@strict.test>\r\nSubject: long-line-binary\r\n' +
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n' +
        'Content-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\n' +
        long +
        '\r\n--b1--\r\n',
    );
    const env = envelope('alice@example.test', ['kim@strict.test'], { body: '8BITMIME' });
    await queueOutbound(p, env, message);
    const got = await waitFor(() => receivedBy(strict, 'long-line-binary'), { what: 'delivery at strict' });
    // RFC 5321 §4.5.3.1.6: 1000 octets on a line at most, with its CRLF
    for (const line of got.data.toString('latin1').split('\r\n'))
      assert.ok(line.length <= 998, `a line of ${line.length}`);
    const parts = mimeParts(got.data);
    assert.deepEqual(
      parts.map((x) => x.cte),
      ['quoted-printable'],
    );
    assert.equal(parts[0]!.payload.toString('latin1'), long);
  });

  test('8-bit body without MIME to a server without 8BITMIME: sent as quoted-printable', async () => {
    const body = 'Grüße\r\nzweite Zeile mit Umlaut: ö\r\n';
    const env = envelope('alice@example.test', ['kim@strict.test'], { body: '8BITMIME' });
    await queueOutbound(p, env, simpleMessage('alice@example.test', 'kim@strict.test', 'eight-bit', body));
    const got = await waitFor(() => receivedBy(strict, 'eight-bit'), { what: 'delivery at strict' });
    assert.ok(!got.data.some((b) => b > 0x7f), 'only 7-bit data was sent');
    const parts = mimeParts(got.data);
    assert.equal(parts.length, 1);
    assert.equal(parts[0]!.cte, 'quoted-printable');
    assert.equal(parts[0]!.charset, 'utf-8');
    assert.equal(parts[0]!.payload.toString('utf8'), body);
    const text = got.data.toString();
    assert.match(text, /^From: <alice@example\.test>\r\nTo: <kim@strict\.test>\r\nSubject: eight-bit\r\n/);
    assert.match(text, /\r\nMIME-Version: 1\.0\r\n/);
  });

  test('8-bit header to a server without 8BITMIME: bounced with 5.6.3, nothing sent', async () => {
    const env = envelope('alice@example.test', ['kim@strict.test'], { body: '8BITMIME' });
    const sent = strict.received.length;
    await queueOutbound(
      p,
      env,
      simpleMessage('alice@example.test', 'kim@strict.test', 'eight-bit-head Grüße', 'Grüße\r\n'),
    );
    const dsn = await waitFor(() => bounces().find((m) => m.includes(`X-Mailyard-Queue-ID: ${env.queueId}`)));
    assert.match(dsn, /Status: 5\.6\.3\r\n/);
    assert.match(dsn, /cannot be converted to 7 bit \(8-bit data in the message header\)/);
    assert.equal(strict.received.length, sent);
  });

  test('larger than the SIZE the server announces: bounced with 5.3.4', async () => {
    const env = envelope('alice@example.test', ['kim@strict.test']);
    await queueOutbound(
      p,
      env,
      simpleMessage(
        'alice@example.test',
        'kim@strict.test',
        'too-big',
        'x'.repeat(70) + '\r\n' + 'y'.repeat(3000) + '\r\n',
      ),
    );
    const dsn = await waitFor(() => bounces().find((m) => m.includes(`X-Mailyard-Queue-ID: ${env.queueId}`)));
    assert.match(dsn, /Status: 5\.3\.4\r\n/);
    assert.ok(!receivedBy(strict, 'too-big'));
  });
});

describe('MTA-STS', () => {
  test('enforce policy and a certificate that does not verify: deferred, never sent in clear', async () => {
    const env = envelope('alice@example.test', ['frank@secure.test']);
    const index = new DeferredIndex(p.redis.redis);
    await queueOutbound(p, env, simpleMessage('alice@example.test', 'frank@secure.test', 'sts-enforce'));
    const entry = await waitFor(
      async () => {
        const e = await entryOf(index, env.queueId);
        return e && e.attempts >= 2 ? e : null;
      },
      { what: 'two deferred attempts' },
    );
    assert.match(entry.lastError ?? '', /TLS/);
    assert.ok(secure.sessions >= 2, 'the MX was contacted');
    assert.equal(secure.received.length, 0, 'nothing delivered without verified TLS');
  });
});
