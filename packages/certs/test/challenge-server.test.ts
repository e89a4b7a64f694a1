// The HTTP-01 listener (port 80) as the internet reaches it: the CA's GET with curl, and
// slow or greedy clients with raw TCP sockets (headers trickled, a silent connection, one
// address or everyone holding too many connections), bodies and methods it never takes.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { type AddressInfo, connect, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { createTestRedis, trickle, untilClosed, waitFor, type TestRedis } from '@mailyard/testkit';
import { createHttpChallengeServer, HTTP_CHALLENGE_LIMITS, type HttpChallengeLimits } from '../src/index.js';

const HOST = 'mail.example.test';
const quiet = { info: () => undefined, warn: () => undefined };
/** A token as Let's Encrypt makes them: 43 characters of base64url. */
const TOKEN = 'LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0';

let r: TestRedis;
const servers: ReturnType<typeof createHttpChallengeServer>[] = [];
before(() => {
  r = createTestRedis();
});
after(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
  await r?.cleanup();
});

/** A listener on loopback with the given limits (the defaults otherwise), and its refusals. */
const start = async (limits: Partial<HttpChallengeLimits> = {}) => {
  const refused: string[] = [];
  const server = createHttpChallengeServer({
    redis: r.redis,
    hostname: HOST,
    logger: quiet,
    limits,
    onRefused: (limit) => refused.push(limit),
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, refused };
};

const open = (port: number) =>
  new Promise<Socket>((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });

/** Sends `request` on a new connection; the server's whole answer once either side closes. */
const exchange = async (port: number, request: string) => {
  const s = await open(port);
  const closed = untilClosed(s);
  s.write(request);
  return (await closed).text;
};

const curl = (...args: string[]) =>
  new Promise<string>((resolve, reject) =>
    execFile('curl', ['-sS', '--max-time', '20', ...args], (err, out) =>
      err ? reject(new Error(`curl ${args.join(' ')}: ${err.message}`)) : resolve(out),
    ),
  );

/** Longer than the header deadline by far less than Node's own (60 s, looked at every 30 s). */
const PROMPTLY_MS = HTTP_CHALLENGE_LIMITS.headerTimeoutMs + 8_000;

test(
  'the CA gets its key authorization, over HTTP/1.1 and 1.0, GET and HEAD',
  { timeout: 30_000 },
  async () => {
    const { port } = await start();
    await r.redis.set(`acme:http-01:${TOKEN}`, `${TOKEN}.thumbprint`);
    const url = `http://127.0.0.1:${port}/.well-known/acme-challenge/${TOKEN}`;
    const fmt = ['-w', '\n%{http_code}', '-H', `Host: ${HOST}`];
    const status = ['-w', '%{http_code}', '-o', '/dev/null', '-H', `Host: ${HOST}`];
    assert.equal(await curl(...fmt, url), `${TOKEN}.thumbprint\n200`);
    assert.equal(await curl(...fmt, '--http1.0', url), `${TOKEN}.thumbprint\n200`);
    assert.equal(await curl(...status, '--head', url), '200');
    // a token not asked for, or not of base64url, or too long for one
    for (const token of ['unknown', 'a.b', '%2E%2E', 'x'.repeat(257)])
      assert.equal(await curl(...status, url.replace(TOKEN, token)), '404', token);
    // every other page is on HTTPS
    assert.equal(
      await curl(
        '-w',
        '%{http_code} %{redirect_url}',
        '-o',
        '/dev/null',
        `http://127.0.0.1:${port}/inbox?x=1`,
      ),
      `301 https://${HOST}/inbox`,
    );
    // also asked in absolute form (RFC 9112 §3.2.2), as a proxy asks: the same page, on our host
    const absolute = await exchange(
      port,
      `GET http://${HOST}/inbox?x=1 HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`,
    );
    assert.match(absolute, /^HTTP\/1\.1 301 /);
    assert.match(absolute, new RegExp(`\\r\\nLocation: https://${HOST}/inbox\\r\\n`, 'i'));
  },
);

test('only GET and HEAD are taken, and never with a body', { timeout: 30_000 }, async () => {
  const { port } = await start();
  await r.redis.set(`acme:http-01:${TOKEN}`, `${TOKEN}.thumbprint`);
  const path = `/.well-known/acme-challenge/${TOKEN}`;
  const post = await exchange(port, `POST ${path} HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 0\r\n\r\n`);
  assert.match(post, /^HTTP\/1\.1 405 /);
  assert.match(post, /\r\nAllow: GET, HEAD\r\n/i);
  for (const body of [
    'Content-Length: 5\r\n\r\nhello',
    'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  ]) {
    const text = await exchange(port, `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\n${body}`);
    assert.match(text, /^HTTP\/1\.1 413 /, body);
    assert.match(text, /a request here has no body/);
  }
  // a body announced and never sent: answered at once, not waited for
  const s = await open(port);
  const closed = untilClosed(s);
  s.write(`GET /inbox HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 100000\r\n\r\nabc`);
  const { text, ms } = await closed;
  assert.match(text, /^HTTP\/1\.1 413 /);
  assert.ok(ms < 5_000, `closed after ${ms} ms`);
});

test(
  'a trickled request gets 408 at the header deadline; a silent connection is closed',
  { timeout: 60_000 },
  async () => {
    const { port } = await start();
    const trickled = await open(port);
    const cut = untilClosed(trickled);
    // a byte every 200 ms: the request would take two minutes to arrive
    const request = `GET /.well-known/acme-challenge/${TOKEN} HTTP/1.1\r\nHost: ${HOST}\r\nX-Slow: ${'a'.repeat(500)}`;
    trickle(trickled, request, 200);
    const silent = await open(port);
    const closed = untilClosed(silent);
    const { text, ms } = await cut;
    assert.match(text, /^HTTP\/1\.1 408 /);
    assert.ok(ms < PROMPTLY_MS, `cut after ${ms} ms`);
    const quiet = await closed;
    assert.ok(quiet.ms < PROMPTLY_MS, `silent connection closed after ${quiet.ms} ms`);
  },
);

test('an idle keep-alive connection is closed after a few seconds', { timeout: 60_000 }, async () => {
  const { port } = await start();
  const s = await open(port);
  const closed = untilClosed(s);
  s.write(`GET /inbox HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
  const { text, ms } = await closed;
  assert.match(text, /^HTTP\/1\.1 301 /);
  assert.match(text, /keep-alive/i, 'the answer kept the connection open');
  assert.ok(ms < HTTP_CHALLENGE_LIMITS.keepAliveTimeoutMs + 5_000, `closed after ${ms} ms`);
});

test('one address past its connection limit gets 503; its slots come back', { timeout: 60_000 }, async () => {
  const { port, refused } = await start();
  await r.redis.set(`acme:http-01:${TOKEN}`, `${TOKEN}.thumbprint`);
  const held = [];
  for (let i = 0; i < HTTP_CHALLENGE_LIMITS.perClient; i++) held.push(await open(port));
  const challenge = `GET /.well-known/acme-challenge/${TOKEN} HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`;
  try {
    const text = await exchange(port, challenge);
    assert.match(text, /^HTTP\/1\.1 503 /);
    assert.match(text, /\r\nRetry-After: 10\r\n/i);
    assert.match(text, /too many connections from your address/);
    assert.deepEqual(refused, ['client']);

    held.shift()!.destroy();
    await waitFor(async () => /^HTTP\/1\.1 200 /.test(await exchange(port, challenge)), {
      what: 'the challenge answered once one connection closed',
    });
  } finally {
    for (const s of held) s.destroy();
  }
});

test(
  "one address's connections past its limit leave the total to others: the CA is answered",
  { timeout: 60_000 },
  async () => {
    const { port, refused } = await start({ perClient: 2, total: 5 });
    await r.redis.set(`acme:http-01:${TOKEN}`, `${TOKEN}.thumbprint`);
    // one address opens twice the total, and sends nothing
    const held = await Promise.all(Array.from({ length: 10 }, () => open(port)));
    try {
      await waitFor(() => refused.length === 8, { what: 'the eight past the limit refused' });
      // the CA validates from another address
      const ca = await new Promise<Socket>((resolve, reject) => {
        const s = connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' }, () => resolve(s));
        s.once('error', reject);
      });
      const closed = untilClosed(ca);
      ca.write(
        `GET /.well-known/acme-challenge/${TOKEN} HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`,
      );
      const { text } = await closed;
      assert.match(text, /^HTTP\/1\.1 200 /);
      assert.ok(text.includes(`${TOKEN}.thumbprint`), text);
      assert.ok(!refused.includes('total'), `refused: ${refused.join(' ')}`);
    } finally {
      for (const s of held) s.destroy();
    }
  },
);

test('past the total a new connection is closed at once, and counted', { timeout: 60_000 }, async () => {
  const { port, refused } = await start({ perClient: 0, total: 4 });
  const held = await Promise.all([1, 2, 3, 4].map(() => open(port)));
  try {
    const { text, ms } = await untilClosed(connect(port, '127.0.0.1'));
    assert.equal(text, '');
    assert.ok(ms < 5_000, `closed after ${ms} ms`);
    await waitFor(() => refused.includes('total'), { what: 'the refusal counted' });
  } finally {
    for (const s of held) s.destroy();
  }
});
