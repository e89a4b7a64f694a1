// A session ended from elsewhere (signed out everywhere, a new password, a revoked app
// password) while it sends a long answer: the BYE [EXPIRED] comes after that answer and
// its tagged reply, never inside it, where a client would read it as part of a literal.
// A shutdown whose grace ends inside such an answer closes the connection with nothing
// written into it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { signOutEverywhere } from '@mailyard/auth';
import { serverSide, waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, sendRaw, startRetrieval, type Retrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

const USER = 'long-answer@example.test';
let p: Platform;
let r: Retrieval;
before(async () => {
  p = await startPlatform();
  r = await startRetrieval(p);
  await addAccount(p.directory, USER);
  const body = `${'x'.repeat(998)}\r\n`.repeat(1000);
  await sendRaw(p, USER, `From: a@remote.example\r\nSubject: large\r\n\r\n${body}`);
});
after(async () => {
  await r?.stop();
  await p?.close();
});

function login(port = r.ports.imap): Promise<RawImap> {
  return RawImap.loggedIn(port, USER, PASSWORD);
}

test(
  'a sign-out everywhere during a long FETCH ends the session after its answer',
  { timeout: 120_000 },
  async () => {
    const reading = await login();
    const idle = await login();
    assert.match(await reading.cmd('s', 'SELECT INBOX'), /^s OK/m);
    // 30 MB of answer, more than the sockets hold: the server waits for this client to read
    const items = Array.from({ length: 30 }, () => 'BODY.PEEK[]').join(' ');
    // read here, not through RawImap (whose search of all it got would take minutes)
    reading.socket.removeAllListeners('data');
    let received = 0;
    let tail = '';
    let tagged = 0;
    let onMegabyte = () => undefined as void;
    reading.socket.on('data', (d: Buffer) => {
      received += d.length;
      const seen = tail.slice(-16) + d.toString('latin1');
      tagged += seen.split('\r\nf OK').length - 1;
      tail = seen.slice(-400);
      if (received > 1 << 20) onMegabyte();
    });
    const closed = new Promise<void>((resolve) => reading.socket.once('close', () => resolve()));
    const started = new Promise<void>((resolve) => (onMegabyte = resolve));
    reading.send(`f FETCH 1 (${items})\r\n`);
    await started;
    reading.socket.pause();
    assert.ok(await signOutEverywhere(p.redis.redis, USER));
    // the other session of the account hears it at once, as the reading one does
    assert.match(await idle.until(/^\* BYE/m, 30_000), /^\* BYE \[EXPIRED\] /m);
    reading.socket.resume();
    await closed;
    assert.ok(received > 30_000_000, `${received} bytes received`);
    assert.match(tail, /\r\nf OK [^\r\n]*\r\n\* BYE \[EXPIRED\] [^\r\n]*\r\n$/);
    assert.equal(tagged, 1, 'one tagged reply');
  },
);

test(
  'a shutdown whose grace ends during a long FETCH writes no BYE into the literal',
  { timeout: 120_000 },
  async () => {
    // a service of its own, to be stopped; a short grace the answer cannot fit in
    const stopping = await startRetrieval(p, { shutdown_grace: '2s' });
    const port = stopping.ports.imap;
    let stopped: Promise<void> | null = null;
    try {
      const c = await login(port);
      assert.match(await c.cmd('s', 'SELECT INBOX'), /^s OK/m);
      const items = Array.from({ length: 30 }, () => 'BODY.PEEK[]').join(' ');
      c.socket.removeAllListeners('data');
      let received = 0;
      let tail = '';
      let byes = 0;
      let tagged = 0;
      let onMegabyte = () => undefined as void;
      c.socket.on('data', (d: Buffer) => {
        received += d.length;
        // the message is lines of "x": a BYE anywhere in the answer is one written into it
        const seen = tail.slice(-16) + d.toString('latin1');
        byes += seen.split('BYE').length - 1;
        tagged += seen.split('\r\nf OK').length - 1;
        tail = seen.slice(-400);
        if (received > 1 << 20) onMegabyte();
      });
      const closed = new Promise<void>((resolve) => c.socket.once('close', () => resolve()));
      const started = new Promise<void>((resolve) => (onMegabyte = resolve));
      c.send(`f FETCH 1 (${items})\r\n`);
      await started;
      c.socket.pause();
      // watched to know when the service ends the connection
      const server = serverSide(c.socket);
      stopped = stopping.stop();
      // the grace is spent with the client not reading: the service ends the connection;
      // the client then reads all that was written before it closes
      await waitFor(() => server.writableEnded, {
        what: 'the end of the connection',
        intervalMs: 5,
        timeoutMs: 60_000,
      });
      c.socket.resume();
      await closed;
      assert.ok(received > 1 << 20, `${received} bytes received`);
      assert.equal(tagged, 0, 'the answer was cut: no tagged reply');
      assert.equal(byes, 0, `no BYE inside the answer; it ended: ${JSON.stringify(tail.slice(-120))}`);
    } finally {
      await (stopped ?? stopping.stop());
    }
  },
);
