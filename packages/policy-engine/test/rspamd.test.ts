import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, test } from 'node:test';
import { droppingPort, waitFor } from '@mailyard/testkit';
import { rspamdCheck } from '../src/rspamd.js';
import { MAX_SCANS_IN_FLIGHT } from '../src/scanner-limits.js';

// The rspamd client against an HTTP server on loopback that answers as rspamd does, or
// fails as a broken one would: every failure is an error (the check then tempfails or
// applies CONTENT_FILTER_FAILURE), never a verdict.

const T = { timeout: 30_000 };
const servers: Server[] = [];
after(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));

async function serve(handler: (req: IncomingMessage, body: Buffer, res: ServerResponse) => void) {
  const s = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handler(req, Buffer.concat(chunks), res));
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

const ENV = {
  ip: '192.0.2.7',
  helo: 'mx.sender.test',
  hostname: 'mx.sender.test',
  from: 'a@sender.test',
  rcpts: ['b@example.test', 'c@example.test'],
  queueId: 'Q1',
  user: null,
};
const MESSAGE = Buffer.from('Subject: hi\r\n\r\nhello\r\n');

test('sends the envelope as rspamd headers and the message as the body; reads the verdict', T, async () => {
  let seen: { headers: IncomingMessage['headers']; body: string; path?: string } | null = null;
  const url = await serve((req, body, res) => {
    seen = { headers: req.headers, body: body.toString(), path: req.url };
    // as rspamd's normal worker: one reply, then the connection is closed
    res.setHeader('Connection', 'close');
    res.end(
      JSON.stringify({ action: 'add header', score: 7.5, required_score: 15, symbols: { X: { score: 1 } } }),
    );
  });
  const r = await rspamdCheck(url, MESSAGE, ENV, 5000);
  assert.deepEqual(r, { action: 'add header', score: 7.5, required_score: 15, symbols: { X: { score: 1 } } });
  assert.equal(seen!.path, '/checkv2');
  assert.equal(seen!.body, MESSAGE.toString());
  assert.equal(seen!.headers.ip, '192.0.2.7');
  assert.equal(seen!.headers.helo, 'mx.sender.test');
  assert.equal(seen!.headers.from, 'a@sender.test');
  assert.equal(seen!.headers.rcpt, 'b@example.test, c@example.test');
  assert.equal(seen!.headers['queue-id'], 'Q1');
  assert.equal(seen!.headers.user, undefined);
});

test('an error status, a reply that is not a verdict, or a cut connection is an error', T, async () => {
  const status = await serve((_q, _b, res) => {
    res.statusCode = 500;
    res.end('{"error":"boom"}');
  });
  await assert.rejects(rspamdCheck(status, MESSAGE, ENV, 5000), /HTTP 500/);
  const garbage = await serve((_q, _b, res) => res.end('not json'));
  await assert.rejects(rspamdCheck(garbage, MESSAGE, ENV, 5000), SyntaxError);
  const noVerdict = await serve((_q, _b, res) => res.end('{"error":"no"}'));
  await assert.rejects(rspamdCheck(noVerdict, MESSAGE, ENV, 5000), /without action\/score/);
  const cut = await serve((req) => req.socket.destroy());
  await assert.rejects(rspamdCheck(cut, MESSAGE, ENV, 5000));
});

test('rspamd not listening, or not answering within the timeout, is an error', T, async () => {
  const closed = await serve(() => undefined);
  await new Promise((r) => servers.pop()!.close(r));
  await assert.rejects(rspamdCheck(closed, MESSAGE, ENV, 5000), /ECONNREFUSED/);
  const silent = await serve(() => undefined);
  await assert.rejects(rspamdCheck(silent, MESSAGE, ENV, 300), /did not answer within 300 ms/);
});

test('a reply far larger than any verdict is refused', T, async () => {
  const huge = await serve((_q, _b, res) => res.end(Buffer.alloc(5 * 1024 * 1024, 0x20)));
  await assert.rejects(rspamdCheck(huge, MESSAGE, ENV, 5000), /more than/);
});

test(
  'a burst of scans reaches rspamd at most MAX_SCANS_IN_FLIGHT at a time; each is answered',
  T,
  async () => {
    const held: ServerResponse[] = [];
    let inFlight = 0;
    let most = 0;
    const url = await serve((_q, _b, res) => {
      most = Math.max(most, ++inFlight);
      res.on('close', () => inFlight--);
      held.push(res);
    });
    const answer = (res: ServerResponse) =>
      res.end(JSON.stringify({ action: 'no action', score: 0, required_score: 15, symbols: {} }));
    // as many sessions ending DATA at once as an intake's listener allows in a burst
    const burst = MAX_SCANS_IN_FLIGHT + 6;
    const scans = Array.from({ length: burst }, () => rspamdCheck(url, MESSAGE, ENV, 20_000));
    await waitFor(() => held.length >= MAX_SCANS_IN_FLIGHT, { what: 'the first scans to arrive' });
    // answered one by one: each answer lets one waiting scan in
    for (let answered = 0; answered < burst; answered++) {
      await waitFor(() => held[answered], { what: `scan ${answered + 1} to arrive` });
      answer(held[answered]!);
    }
    const results = await Promise.all(scans);
    assert.equal(results.length, burst);
    assert.ok(results.every((r) => r.action === 'no action'));
    assert.equal(most, MAX_SCANS_IN_FLIGHT, 'never more in flight at once');
  },
);

test('a scan that waits for a slot past its deadline fails as unanswered, never sent', T, async () => {
  const held: ServerResponse[] = [];
  const url = await serve((_q, _b, res) => void held.push(res));
  const first = Array.from({ length: MAX_SCANS_IN_FLIGHT }, () => rspamdCheck(url, MESSAGE, ENV, 20_000));
  await waitFor(() => held.length === MAX_SCANS_IN_FLIGHT, { what: 'every slot taken' });
  await assert.rejects(rspamdCheck(url, MESSAGE, ENV, 300), /did not answer within 300 ms/);
  for (const res of held)
    res.end(JSON.stringify({ action: 'no action', score: 0, required_score: 15, symbols: {} }));
  assert.equal((await Promise.all(first)).length, MAX_SCANS_IN_FLIGHT);
  // the slots are all free again: a scan goes out at once
  const next = rspamdCheck(url, MESSAGE, ENV, 20_000);
  await waitFor(() => held.length === MAX_SCANS_IN_FLIGHT + 1, { what: 'the next scan' });
  held.at(-1)!.end(JSON.stringify({ action: 'no action', score: 0, required_score: 15, symbols: {} }));
  assert.equal((await next).action, 'no action');
});

test(
  'a scan whose caller stops waiting ends at once, sent or waiting for a slot, and frees its slot',
  T,
  async () => {
    const held: ServerResponse[] = [];
    const url = await serve((_q, _b, res) => void held.push(res));
    const sessions = Array.from({ length: MAX_SCANS_IN_FLIGHT }, () => new AbortController());
    const first = sessions.map((c) => rspamdCheck(url, MESSAGE, ENV, 20_000, c.signal));
    await waitFor(() => held.length === MAX_SCANS_IN_FLIGHT, { what: 'every slot taken' });
    const waiting = new AbortController();
    const queued = rspamdCheck(url, MESSAGE, ENV, 20_000, waiting.signal);
    const gone = new Error('the session stopped waiting');
    waiting.abort(gone);
    await assert.rejects(queued, (err) => err === gone);
    // the ones sent: their connections are closed, and each rejects with its session's reason
    const closed = held.map((res) => new Promise<void>((r) => res.once('close', () => r())));
    for (const c of sessions) c.abort(gone);
    for (const p of first) await assert.rejects(p, (err) => err === gone);
    await Promise.all(closed);
    // every slot free again: the next scan goes out at once, never sent the aborted one
    assert.equal(held.length, MAX_SCANS_IN_FLIGHT);
    const next = rspamdCheck(url, MESSAGE, ENV, 20_000);
    await waitFor(() => held.length === MAX_SCANS_IN_FLIGHT + 1, { what: 'the next scan' });
    held.at(-1)!.end(JSON.stringify({ action: 'no action', score: 0, required_score: 15, symbols: {} }));
    assert.equal((await next).action, 'no action');
  },
);

test(
  'no connection within a deadline shorter than the connect timeout is still "not connected"',
  T,
  async () => {
    // connection attempts dropped, as a firewall dropping packets would
    const dropping = await droppingPort();
    try {
      const err = await rspamdCheck(`http://127.0.0.1:${dropping.port}`, MESSAGE, ENV, 1000).then(
        () => null,
        (e: unknown) => e as NodeJS.ErrnoException,
      );
      assert.equal(err?.code, 'ETIMEDOUT', String(err));
    } finally {
      dropping.close();
    }
  },
);
