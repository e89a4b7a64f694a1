// Slow and greedy clients of the HTTPS port, attacked as they would be from the internet,
// with raw TCP and TLS sockets: a handshake never finished, headers or a body trickled, an
// idle keep-alive connection, one address (or everyone) holding too many connections; and
// the HTTP port of ACME challenges, with limits of its own.
// Each webmail here has short deadlines, so that a test takes seconds, where Node's and
// Fastify's own (60 to 120 s, or none) would hold the socket past the test's timeout.
import assert from 'node:assert/strict';
import { connect as netConnect, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { createRegistry, type Registry } from '@mailyard/observability';
import { HTTP_CHALLENGE_LIMITS } from '@mailyard/certs';
import { trickle, untilClosed, waitFor } from '@mailyard/testkit';
import { HOST, startWebmailTestbed, type WebmailTestbed } from './webmail-harness.js';

let t: WebmailTestbed;
before(async () => {
  t = await startWebmailTestbed();
});
after(async () => {
  await t?.close();
});

/** Well under the deadlines Node and Fastify have without the settings (60 s and more). */
const PROMPTLY_MS = 20_000;

const tlsOpen = (port: number) =>
  new Promise<TLSSocket>((resolve, reject) => {
    const s = tlsConnect({ port, host: '127.0.0.1', ca: t.ca, servername: HOST }, () => resolve(s));
    s.once('error', reject);
  });

const metric = async (registry: Registry, limit: string) =>
  (await registry.getSingleMetric('mailyard_webmail_connections_refused_total')!.get()).values.find(
    (v) => v.labels.limit === limit,
  )?.value ?? 0;

test('a TLS handshake never begun is closed at CLIENT_HEADER_TIMEOUT', { timeout: 60_000 }, async () => {
  const w = await t.another({ client_header_timeout: '1s' });
  const s = netConnect(w.port, '127.0.0.1');
  const { ms } = await untilClosed(s);
  assert.ok(ms < PROMPTLY_MS, `closed after ${ms} ms`);
});

test('headers trickled a byte at a time get 408 at CLIENT_HEADER_TIMEOUT', { timeout: 60_000 }, async () => {
  const w = await t.another({ client_header_timeout: '1s' });
  const s = await tlsOpen(w.port);
  const closed = untilClosed(s);
  trickle(s, `GET / HTTP/1.1\r\nHost: ${HOST}\r\nX-Slow: ${'a'.repeat(500)}`, 100);
  const { text, ms } = await closed;
  assert.match(text, /^HTTP\/1\.1 408 /);
  assert.ok(ms < PROMPTLY_MS, `closed after ${ms} ms`);
});

test(
  'a body that pauses longer than CLIENT_BODY_TIMEOUT is cut; one that keeps moving is read whole',
  { timeout: 60_000 },
  async () => {
    const w = await t.another({ client_body_timeout: '2s' });
    const head = (length: number) =>
      `POST /api/no-such-thing HTTP/1.1\r\nHost: ${HOST}\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;

    // slow, but a byte every quarter second: longer in all than the deadline, never silent that long
    const body = `{"a":"${'x'.repeat(14)}"}`;
    const moving = await tlsOpen(w.port);
    const answered = new Promise<string>((resolve) =>
      moving.once('data', (d: Buffer) => resolve(d.toString())),
    );
    const start = Date.now();
    moving.write(head(body.length));
    trickle(moving, body, 250);
    assert.match(await answered, /^HTTP\/1\.1 404 /);
    assert.ok(Date.now() - start > 2000, 'the body took longer than the deadline');
    moving.destroy();

    // a few bytes, then silence
    const stalled = await tlsOpen(w.port);
    const closed = untilClosed(stalled);
    stalled.write(`${head(100_000)}{"a":"`);
    const { text, ms } = await closed;
    assert.equal(text, '', 'closed without an answer');
    assert.ok(ms < PROMPTLY_MS, `closed after ${ms} ms`);
  },
);

test('an idle keep-alive connection is closed at KEEPALIVE_TIMEOUT', { timeout: 60_000 }, async () => {
  const w = await t.another({ keepalive_timeout: '1s' });
  const s = await tlsOpen(w.port);
  const closed = untilClosed(s);
  s.write(`GET /api/no-such-thing HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
  const { text, ms } = await closed;
  assert.match(text, /^HTTP\/1\.1 404 /);
  assert.match(text, /keep-alive/i, 'the answer kept the connection open');
  assert.ok(ms < PROMPTLY_MS, `closed after ${ms} ms`);
});

test(
  'one address past CLIENT_CONNECTION_LIMIT gets 503 too_many_connections; its slots come back',
  { timeout: 60_000 },
  async () => {
    const registry = createRegistry('webmail');
    // no proxy in front: the socket's own address is the client's
    const w = await t.another({ trusted_proxies: '', client_connection_limit: 3 }, { registry });
    const held = await Promise.all([1, 2, 3].map(() => tlsOpen(w.port)));
    const extra = await tlsOpen(w.port);
    const closed = untilClosed(extra);
    extra.write(`GET /api/no-such-thing HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
    const { text } = await closed;
    assert.match(text, /^HTTP\/1\.1 503 /);
    assert.match(text, /"error":"too_many_connections"/);
    assert.equal(await metric(registry, 'client'), 1);

    held[0]!.destroy();
    const again = await waitFor(
      async () => {
        const s = await tlsOpen(w.port);
        const answer = untilClosed(s);
        s.write(`GET /api/no-such-thing HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
        return (await answer).text.match(/^HTTP\/1\.1 (\d+)/)?.[1] === '404';
      },
      { what: 'a connection admitted once one of the three closed' },
    );
    assert.ok(again);
    for (const s of held) s.destroy();
  },
);

test(
  "one address's connections past its limit leave CONNECTION_LIMIT to others",
  { timeout: 60_000 },
  async () => {
    const registry = createRegistry('webmail');
    const w = await t.another(
      { trusted_proxies: '', client_connection_limit: 2, connection_limit: 5 },
      { registry },
    );
    // one address opens twice the total, and sends nothing
    const held = await Promise.all(
      Array.from(
        { length: 10 },
        () =>
          new Promise<Socket>((resolve, reject) => {
            const s = netConnect(w.port, '127.0.0.1', () => resolve(s));
            s.once('error', reject);
          }),
      ),
    );
    try {
      await waitFor(
        async () => (await metric(registry, 'client')) + (await metric(registry, 'total')) === 8,
        {
          what: 'the eight past the limit refused',
        },
      );
      // another client is served
      const other = await new Promise<TLSSocket>((resolve, reject) => {
        const raw = netConnect({ port: w.port, host: '127.0.0.1', localAddress: '127.0.0.2' });
        const s = tlsConnect({ socket: raw, ca: t.ca, servername: HOST }, () => resolve(s));
        s.once('error', reject);
      });
      const answer = untilClosed(other);
      other.write(`GET /api/no-such-thing HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
      assert.match((await answer).text, /^HTTP\/1\.1 404 /);
      assert.equal(await metric(registry, 'total'), 0);
    } finally {
      for (const s of held) s.destroy();
    }
  },
);

test(
  'behind a trusted proxy the limit counts the forwarded address, not the proxy',
  { timeout: 60_000 },
  async () => {
    // the testbed's proxy is 127.0.0.0/8: each request names its client in X-Forwarded-For
    const w = await t.another({ client_connection_limit: 2 });
    const request = (client: string) =>
      `POST /api/no-such-thing HTTP/1.1\r\nHost: ${HOST}\r\nX-Forwarded-For: ${client}\r\n` +
      'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{';
    // two requests of 10.1.1.1 still running (their bodies unfinished)
    const running = await Promise.all([1, 2].map(() => tlsOpen(w.port)));
    for (const s of running) s.write(request('10.1.1.1'));
    // once both are counted (each arrives on a connection of its own, in any order), a
    // third request of that client is refused, though the proxy's connections are not
    const status = async (client: string) => {
      const s = await tlsOpen(w.port);
      const answer = untilClosed(s);
      s.write(
        `GET /api/no-such-thing HTTP/1.1\r\nHost: ${HOST}\r\nX-Forwarded-For: ${client}\r\nConnection: close\r\n\r\n`,
      );
      return (await answer).text;
    };
    const refused = await waitFor(
      async () => {
        const text = await status('10.1.1.1');
        return /^HTTP\/1\.1 503 /.test(text) && text;
      },
      { what: 'the third request of 10.1.1.1 refused' },
    );
    assert.match(refused, /"error":"too_many_connections"/);
    // another client through the same proxy is served
    assert.match(await status('10.2.2.2'), /^HTTP\/1\.1 404 /);
    for (const s of running) s.destroy();
  },
);

test(
  'past CONNECTION_LIMIT a new connection is closed at once, and counted',
  { timeout: 60_000 },
  async () => {
    const registry = createRegistry('webmail');
    const w = await t.another(
      { trusted_proxies: '', client_connection_limit: 0, connection_limit: 4 },
      { registry },
    );
    const held = await Promise.all([1, 2, 3, 4].map(() => tlsOpen(w.port)));
    const extra = netConnect(w.port, '127.0.0.1');
    const { text, ms } = await untilClosed(extra);
    assert.equal(text, '');
    assert.ok(ms < PROMPTLY_MS, `closed after ${ms} ms`);
    await waitFor(async () => (await metric(registry, 'total')) === 1, { what: 'the refusal counted' });
    for (const s of held) s.destroy();
  },
);

test(
  'the HTTP port of ACME challenges refuses one address past its limit, counted apart',
  { timeout: 60_000 },
  async () => {
    const registry = createRegistry('webmail');
    const w = await t.another({ webmail_http_port: 0 }, { registry });
    const port = w.listening().http!;
    const open = () =>
      new Promise<Socket>((resolve, reject) => {
        const s = netConnect(port, '127.0.0.1', () => resolve(s));
        s.once('error', reject);
      });
    const held: Socket[] = [];
    try {
      for (let i = 0; i < HTTP_CHALLENGE_LIMITS.perClient; i++) held.push(await open());
      const extra = await open();
      const closed = untilClosed(extra);
      extra.write(`GET /.well-known/acme-challenge/abc HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
      assert.match((await closed).text, /^HTTP\/1\.1 503 /);
      const refused = (
        await registry.getSingleMetric('mailyard_webmail_http_connections_refused_total')!.get()
      ).values;
      assert.deepEqual(
        refused.map((v) => [v.labels.limit, v.value]),
        [['client', 1]],
      );
      // the HTTPS port's count is its own
      assert.equal(await metric(registry, 'client'), 0);
    } finally {
      for (const s of held) s.destroy();
    }
  },
);
