// POP3 RETR and TOP are sent as the client reads them, as Dovecot sends them: a session
// holds a piece of a large message at a time, not all of it, and the byte-stuffing, the
// CRLF line ends and the terminating line come out the same wherever the pieces split
// the file. Nothing is written into a message being sent: a session whose credential is
// revoked is cut within seconds, without a closing line, and frees the mailbox.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { signOutEverywhere } from '@mailyard/auth';
import { serverSide, waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { MultilineBody } from '../src/pop3/multiline.js';
import { PASSWORD, startRetrieval, type Retrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

const USER = 'pop3-stream@example.test';
const LINES = 300_000;

/** RFC 1939 §3 line by line: what RETR (top null) or TOP sends of a message after its +OK. */
function expected(data: Buffer, top: number | null): string {
  const text = data.toString('latin1');
  const lines = text.split('\n');
  // the bytes after the last LF: a last line without its line end, or nothing
  const rest = lines.pop()!;
  let out = '';
  let inHeader = top !== null;
  let left = top;
  for (const l of lines) {
    const line = l.endsWith('\r') ? l.slice(0, -1) : l;
    out += (line.startsWith('.') ? '.' : '') + line + '\r\n';
    if (inHeader) {
      if (line === '') {
        inHeader = false;
        if (left === 0) return out + '.\r\n';
      }
    } else if (left !== null && --left === 0) return out + '.\r\n';
  }
  if (rest !== '') out += (rest.startsWith('.') ? '.' : '') + rest + '\r\n';
  // an empty message: no line at all (RFC 1939 §3), only the "."
  return out + '.\r\n';
}

function encoded(data: Buffer, top: number | null, cuts: number[]): string {
  const body = new MultilineBody(top);
  const out: Buffer[] = [];
  let from = 0;
  for (const at of [...cuts, data.length]) {
    if (body.done) break;
    out.push(...body.push(data.subarray(from, at)));
    from = at;
  }
  out.push(body.end());
  return Buffer.concat(out).toString('latin1');
}

test('RETR and TOP send the same bytes wherever the file is split', () => {
  const tokens = ['a', 'b', '.', '..', '\r', '\n', '\r\n', '\r\n\r\n', '\n\n', '.\r\n', 'x'.repeat(40)];
  let seed = 7;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let i = 0; i < 300; i++) {
    const data = Buffer.from(
      Array.from({ length: rand(60) }, () => tokens[rand(tokens.length)]).join(''),
      'latin1',
    );
    const cuts = [...new Set(Array.from({ length: rand(8) }, () => rand(data.length + 1)))].sort(
      (a, b) => a - b,
    );
    // every split point, and pieces of one byte
    const single = Array.from({ length: data.length }, (_, k) => k);
    for (const top of [null, 0, 1, 2, 5]) {
      const want = expected(data, top);
      assert.equal(encoded(data, top, cuts), want, JSON.stringify({ data: data.toString(), top, cuts }));
      assert.equal(encoded(data, top, single), want, JSON.stringify({ data: data.toString(), top }));
    }
  }
});

/** A message of about 24 MB with LF line ends and many lines beginning with ".". */
const MESSAGE = Buffer.from(
  'From: a@remote.example\nSubject: large\n\n' +
    Array.from({ length: LINES }, (_, i) =>
      i % 7 === 0 ? '.' : i % 11 === 0 ? `..${i}` : `.line ${i} ${'x'.repeat(60)}`,
    ).join('\n') +
    '\n',
  'latin1',
);

let p: Platform;
let r: Retrieval;
before(async () => {
  p = await startPlatform({ withDelivery: false });
  await addAccount(p.directory, USER);
  r = await startRetrieval(p, { message_size_limit: 2 * MESSAGE.length });
  const c = await RawImap.loggedIn(r.ports.imap, USER, PASSWORD);
  c.send(`a APPEND INBOX {${MESSAGE.length}}\r\n`);
  await c.until(/^\+/m);
  c.send(Buffer.concat([MESSAGE, Buffer.from('\r\n')]));
  await c.until(/^a OK/m, 60_000);
  c.close();
});
after(async () => {
  await r?.stop();
  await p?.close();
});

/** A logged-in POP3 client that keeps what it reads as chunks; `until` looks at the end. */
async function pop3(): Promise<{ c: Socket; got: () => string; until: (re: RegExp) => Promise<void> }> {
  const c = connect(r.ports.pop3, '127.0.0.1');
  await once(c, 'connect');
  const chunks: Buffer[] = [];
  let tail = '';
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  c.on('data', (d: Buffer) => {
    chunks.push(d);
    tail = (tail + d.toString('latin1')).slice(-300);
    for (const w of waiters.splice(0)) {
      if (w.re.test(tail)) w.resolve();
      else waiters.push(w);
    }
  });
  const until = (re: RegExp) =>
    re.test(tail) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ re, resolve }));
  await until(/^\+OK .*\r\n$/);
  c.write(`USER ${USER}\r\nPASS ${PASSWORD}\r\n`);
  await until(/\+OK Logged in, 1 message\r\n$/);
  chunks.length = 0;
  tail = '';
  return { c, got: () => Buffer.concat(chunks).toString('latin1'), until };
}

/** Waits until the server waits for the client: the socket's output is still and not empty. */
async function stalled(s: Socket, sample = () => undefined as void): Promise<void> {
  let last = -1;
  let still = 0;
  await waitFor(
    () => {
      sample();
      still = s.bytesWritten === last && s.writableLength > 0 ? still + 1 : 0;
      last = s.bytesWritten;
      return still >= 20;
    },
    { what: 'the server waiting for the client', intervalMs: 25, timeoutMs: 60_000 },
  );
}

test(
  'a large RETR the client does not read is not held whole, and arrives whole once read',
  { timeout: 180_000 },
  async (t) => {
    const { c, got, until } = await pop3();
    t.after(() => c.destroy());
    const s = serverSide(c);
    c.pause();
    const base = process.memoryUsage().arrayBuffers;
    c.write('RETR 1\r\n');
    // the kernel's buffers fill, and the rest of the message waits in the server
    let held = 0;
    let memory = 0;
    await stalled(s, () => {
      held = Math.max(held, s.writableLength);
      memory = Math.max(memory, process.memoryUsage().arrayBuffers - base);
    });
    // the message is about 24 MB, twice that as the old code held it
    assert.ok(held < 512 << 10, `${held} bytes waiting for the client in the server`);
    assert.ok(memory < 16 << 20, `${memory >> 20} MB more memory while the client did not read`);
    c.resume();
    await until(/\r\n\.\r\n$/);
    const answer = got();
    const ok = answer.indexOf('\r\n') + 2;
    assert.match(answer.slice(0, ok), /^\+OK \d+ octets\r\n$/);
    assert.ok(answer.slice(ok) === expected(MESSAGE, null), 'the message, byte-stuffed, with CRLF');
    c.write('TOP 1 3\r\nQUIT\r\n');
    await until(/\+OK Logging out.*\r\n$/);
    assert.equal(
      got().slice(answer.length),
      `+OK \r\n${expected(MESSAGE, 3)}+OK Logging out, 0 messages deleted\r\n`,
    );
    c.destroy();
  },
);

/** Waits for the server to end the connection, and says how long it took. */
async function serverClosed(s: Socket, timeoutMs: number): Promise<number> {
  const started = Date.now();
  await waitFor(() => s.destroyed, { what: 'the server ending the session', intervalMs: 25, timeoutMs });
  return Date.now() - started;
}

test(
  'a sign-out everywhere during a large RETR the client does not read ends the session within seconds',
  { timeout: 180_000 },
  async (t) => {
    // an IMAP session of the account, which hears the sign-out in the same process
    const imap = await RawImap.loggedIn(r.ports.imap, USER, PASSWORD);
    t.after(() => imap.close());
    const { c, got } = await pop3();
    t.after(() => c.destroy());
    const s = serverSide(c);
    c.pause();
    c.write('RETR 1\r\nDELE 1\r\nQUIT\r\n');
    await stalled(s);
    assert.ok(await signOutEverywhere(p.redis.redis, USER));
    // heard while the client still has most of the message to read
    assert.match(await imap.until(/^\* BYE/m, 30_000), /^\* BYE \[EXPIRED\] /m);
    // ended though the client reads nothing: not at the autologout, minutes away
    await serverClosed(s, 30_000);
    // the mailbox lock is free, and the commands behind the RETR were dropped: nothing deleted
    const again = await pop3();
    again.c.destroy();
    const closed = once(c, 'close');
    c.resume();
    await closed;
    const answer = got();
    const ok = answer.indexOf('\r\n') + 2;
    const body = expected(MESSAGE, null);
    assert.match(answer.slice(0, ok), /^\+OK \d+ octets\r\n$/);
    // cut without a closing line: nothing written into the message
    assert.ok(answer.length - ok < body.length, 'the message cut short');
    assert.ok(body.startsWith(answer.slice(ok)), 'only bytes of the message, no -ERR among them');
    c.destroy();
  },
);

test(
  'a sign-out everywhere during a RETR read slowly frees the mailbox long before it is read',
  { timeout: 180_000 },
  async (t) => {
    const imap = await RawImap.loggedIn(r.ports.imap, USER, PASSWORD);
    t.after(() => imap.close());
    const { c } = await pop3();
    t.after(() => c.destroy());
    const s = serverSide(c);
    c.pause();
    c.write('RETR 1\r\n');
    await stalled(s);
    // 4 KB every 50 ms: minutes for the whole message, each read draining the server a bit
    const reader = setInterval(() => {
      c.read(4096);
    }, 50);
    t.after(() => clearInterval(reader));
    assert.ok(await signOutEverywhere(p.redis.redis, USER));
    assert.match(await imap.until(/^\* BYE/m, 30_000), /^\* BYE \[EXPIRED\] /m);
    const took = await serverClosed(s, 60_000);
    assert.ok(took < 60_000, `ended after ${took} ms`);
    // the real user's client logs in: no -ERR [IN-USE]
    const again = await pop3();
    again.c.destroy();
    clearInterval(reader);
    c.destroy();
  },
);
