// RFC 2920 §3.1 on the listener both SMTP services share: a client not logged in that
// sends on before the reply to a command that ends a group (HELO, EHLO, NOOP, VRFY, DATA),
// or pipelines where PIPELINING was not offered, is refused (Postfix's
// smtpd_forbid_unauth_pipelining); message content sent before the 354 always is,
// whatever the packets were.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import type { SmtpReject } from '@mailyard/smtp-core';
import type { ListenerOptions, MailyardSmtpServer } from '../src/index.js';
import { startListener } from './helpers.js';

let server: MailyardSmtpServer;
let port: number;
/** The same listener with forbidUnauthPipelining off. */
let lenient: MailyardSmtpServer;
let lenientPort: number;
/** Server-side sockets, to see when the server has read what the client sent. */
const accepted: Socket[] = [];
/** RCPT TO answers wait for this, when set: lets a test queue input behind a pending command. */
let rcptGate: Promise<void> | null = null;
let rcptSeen: (() => void) | null = null;
const received: string[] = [];
const refused: { err: SmtpReject; after: unknown; input: unknown }[] = [];

const options = (): Partial<ListenerOptions> => ({
  allowInsecureAuth: true,
  authMethods: ['PLAIN'],
  hideSTARTTLS: true,
  onAuth: (auth, _session, cb) => cb(null, { user: auth.username }),
  onRcptTo(_address, _session, cb) {
    rcptSeen?.();
    if (!rcptGate) return cb();
    void rcptGate.then(() => cb());
  },
  onData(stream, _session, cb) {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      received.push(Buffer.concat(chunks).toString());
      cb(null, 'Ok: queued');
    });
  },
  onReject: (err, _session, extra) => refused.push({ err, after: extra.after, input: extra.input }),
});

before(async () => {
  ({ server, port } = await startListener(options()));
  ({ server: lenient, port: lenientPort } = await startListener({
    ...options(),
    forbidUnauthPipelining: false,
  }));
  (server as unknown as { server: { on(e: 'connection', f: (s: Socket) => void): void } }).server.on(
    'connection',
    (s) => accepted.push(s),
  );
});
after(async () => {
  for (const s of [server, lenient]) await new Promise<void>((resolve) => s.close(() => resolve()));
});

/** A raw client reading whole replies, past the greeting and (unless `ehlo` is false) EHLO. */
async function client(opts: { ehlo?: boolean; port?: number } = {}): Promise<{
  write(s: string): void;
  reply(): Promise<string>;
  /** Waits for the server to close; what it sent that was not read. */
  closed(): Promise<string>;
  sent: number;
}> {
  const s = connect(opts.port ?? port, '127.0.0.1');
  let buf = '';
  let ended = false;
  const waiters: (() => void)[] = [];
  s.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    for (const w of waiters.splice(0)) w();
  });
  s.on('close', () => {
    ended = true;
    for (const w of waiters.splice(0)) w();
  });
  s.on('error', () => undefined);
  const wait = () => new Promise<void>((r) => waiters.push(r));
  const c = {
    sent: 0,
    write(text: string) {
      c.sent += Buffer.byteLength(text);
      s.write(text);
    },
    async reply(): Promise<string> {
      for (;;) {
        const m = /^(?:\d{3}-[^\r\n]*\r\n)*\d{3} [^\r\n]*\r\n/.exec(buf);
        if (m) {
          buf = buf.slice(m[0].length);
          return m[0];
        }
        if (ended) throw new Error(`closed; unread: ${buf}`);
        await wait();
      }
    },
    async closed(): Promise<string> {
      while (!ended) await wait();
      return buf;
    },
  };
  await new Promise<void>((r) => s.once('connect', () => r()));
  assert.match(await c.reply(), /^220 /);
  if (opts.ehlo === false) return c;
  c.write('EHLO client.test\r\n');
  assert.match(await c.reply(), /^250[ -]/);
  return c;
}

/** A client past EHLO and AUTH. */
async function loggedIn(): Promise<Awaited<ReturnType<typeof client>>> {
  const c = await client();
  c.write(`AUTH PLAIN ${Buffer.from('\0user\0pw').toString('base64')}\r\n`);
  assert.match(await c.reply(), /^235 /);
  return c;
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test(
  'content in the same packet as DATA: 554 5.5.0 instead of 354, disconnected, nothing received',
  { timeout: 10_000 },
  async () => {
    const before = received.length;
    const c = await client();
    c.write('MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: early\r\n\r\nx\r\n.\r\n');
    assert.match(await c.reply(), /^250 /);
    assert.match(await c.reply(), /^250 /);
    assert.match(await c.reply(), /^554 5\.5\.0 Error: SMTP protocol synchronization\r\n$/);
    await c.closed();
    assert.equal(received.length, before);
    assert.equal(refused.at(-1)?.err.reason, 'improper_pipelining');
  },
);

test(
  'content read while DATA waited behind a pending RCPT: refused the same way',
  { timeout: 10_000 },
  async () => {
    const before = received.length;
    let release!: () => void;
    rcptGate = new Promise<void>((r) => (release = r));
    const seen = new Promise<void>((r) => (rcptSeen = r));
    try {
      const c = await client();
      c.write('MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n');
      await seen;
      c.write('Subject: early\r\n\r\nx\r\n.\r\n');
      // the server has read the content (queued behind the RCPT) before DATA is handled
      const sock = accepted.at(-1)!;
      await until(() => sock.bytesRead >= c.sent, 'the server to read the content');
      release();
      assert.match(await c.reply(), /^250 /);
      assert.match(await c.reply(), /^250 /);
      assert.match(await c.reply(), /^554 5\.5\.0 /);
      await c.closed();
      assert.equal(received.length, before);
    } finally {
      rcptGate = null;
      rcptSeen = null;
    }
  },
);

test(
  'DATA as the last command of a group, content after the 354, and the next group after the dot',
  { timeout: 10_000 },
  async () => {
    const before = received.length;
    const c = await client();
    c.write('MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n');
    for (const code of ['250', '250', '354']) assert.ok((await c.reply()).startsWith(code));
    // RFC 2920 §3.1: the message may be followed by the next transaction in one group
    c.write('Subject: one\r\n\r\nx\r\n.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n');
    for (const code of ['250', '250', '250', '354']) assert.ok((await c.reply()).startsWith(code));
    c.write('Subject: two\r\n\r\ny\r\n.\r\n');
    assert.match(await c.reply(), /^250 /);
    assert.equal(received.length, before + 2);
    c.write('QUIT\r\n');
    await c.closed();
  },
);

test('a client that logged in may send its content with DATA', { timeout: 10_000 }, async () => {
  const before = received.length;
  const c = await loggedIn();
  c.write('MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: s\r\n\r\nx\r\n.\r\n');
  for (const code of ['250', '250', '354', '250']) assert.ok((await c.reply()).startsWith(code));
  assert.equal(received.length, before + 1);
  c.write('QUIT\r\n');
  await c.closed();
});

const SYNC_ERROR = /^554 5\.5\.0 Error: SMTP protocol synchronization\r\n$/;

test(
  'MAIL sent with EHLO, before its reply: 554 5.5.0 instead of the EHLO reply, disconnected',
  { timeout: 10_000 },
  async () => {
    const c = await client({ ehlo: false });
    c.write('EHLO x\r\nMAIL FROM:<a@b>\r\n');
    assert.match(await c.reply(), SYNC_ERROR);
    assert.equal(await c.closed(), '');
    assert.deepEqual(refused.at(-1), {
      err: refused.at(-1)!.err,
      after: 'EHLO',
      input: 'MAIL FROM:<a@b>\r\n',
    });
    assert.equal(refused.at(-1)!.err.reason, 'improper_pipelining');
  },
);

test(
  'a whole transaction in one write from the greeting: refused at EHLO, no message received',
  { timeout: 10_000 },
  async () => {
    const before = received.length;
    const c = await client({ ehlo: false });
    c.write(
      'EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: s\r\n\r\nx\r\n.\r\nQUIT\r\n',
    );
    assert.match(await c.reply(), SYNC_ERROR);
    assert.equal(await c.closed(), '');
    assert.equal(received.length, before);
  },
);

test(
  'NOOP and VRFY end a group: what follows them before their reply is refused',
  { timeout: 10_000 },
  async () => {
    for (const first of ['NOOP', 'VRFY someone']) {
      const c = await client();
      c.write(`MAIL FROM:<a@b.test>\r\n${first}\r\nRCPT TO:<c@d.test>\r\n`);
      assert.match(await c.reply(), /^250 /);
      assert.match(await c.reply(), SYNC_ERROR);
      assert.equal(await c.closed(), '');
      assert.equal(refused.at(-1)?.after, first.split(' ')[0]);
    }
  },
);

test(
  'after HELO, which offers no PIPELINING, any command pipelined is refused',
  { timeout: 10_000 },
  async () => {
    const c = await client({ ehlo: false });
    c.write('HELO x\r\n');
    assert.match(await c.reply(), /^250 /);
    c.write('MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n');
    assert.match(await c.reply(), SYNC_ERROR);
    assert.equal(await c.closed(), '');
    assert.equal(refused.at(-1)?.after, 'MAIL');
  },
);

test('a client that logged in may pipeline after EHLO, NOOP and VRFY', { timeout: 10_000 }, async () => {
  const before = received.length;
  const c = await loggedIn();
  c.write('NOOP\r\nVRFY someone\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n');
  for (const code of ['250', '252', '250', '250', '354']) assert.ok((await c.reply()).startsWith(code));
  c.write('Subject: s\r\n\r\nx\r\n.\r\nEHLO again\r\nQUIT\r\n');
  for (const code of ['250', '250', '221']) assert.ok((await c.reply()).startsWith(code));
  await c.closed();
  assert.equal(received.length, before + 1);
});

test(
  'with forbidUnauthPipelining off, only content before the 354 is refused',
  { timeout: 10_000 },
  async () => {
    const before = received.length;
    const c = await client({ ehlo: false, port: lenientPort });
    c.write('EHLO x\r\nMAIL FROM:<a@b.test>\r\nNOOP\r\nRCPT TO:<c@d.test>\r\nDATA\r\n');
    for (const code of ['250', '250', '250', '250', '354']) assert.ok((await c.reply()).startsWith(code));
    c.write('Subject: s\r\n\r\nx\r\n.\r\n');
    assert.match(await c.reply(), /^250 /);
    assert.equal(received.length, before + 1);
    c.write('MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: early\r\n\r\nx\r\n.\r\n');
    for (const code of ['250', '250']) assert.ok((await c.reply()).startsWith(code));
    assert.match(await c.reply(), SYNC_ERROR);
    assert.equal(await c.closed(), '');
    assert.equal(received.length, before + 1);
  },
);
