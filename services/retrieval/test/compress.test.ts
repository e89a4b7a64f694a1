// COMPRESS=DEFLATE (RFC 4978): a raw client that compresses both ways, and imapflow.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { constants as zc, createDeflateRaw, createInflateRaw } from 'node:zlib';
import { ImapFlow } from 'imapflow';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, sendRaw, startRetrieval, type Retrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

let p: Platform;
let r: Retrieval;
const USER = 'compress@example.test';
// compressible, as mail text is
const BODY = 'The same sentence of a long newsletter, again and again.\r\n'.repeat(2000);

before(async () => {
  p = await startPlatform();
  await addAccount(p.directory, USER);
  r = await startRetrieval(p);
  await sendRaw(p, USER, `From: a@remote.example\r\nTo: ${USER}\r\nSubject: big\r\n\r\n${BODY}`);
});
after(async () => {
  await r?.stop();
  await p?.close();
});

/**
 * Speaks deflate both ways after COMPRESS. A reply is awaited on events alone (inflated
 * data, or the connection closing): how long the server takes on a busy machine is the
 * test's timeout to judge, not a guess here.
 */
function compressedClient(c: RawImap) {
  const inflate = createInflateRaw();
  const deflate = createDeflateRaw();
  let text = '';
  let wire = 0;
  let closed = false;
  const waiters: (() => void)[] = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  c.socket.removeAllListeners('data');
  c.socket.on('data', (d: Buffer) => {
    wire += d.length;
    inflate.write(d);
  });
  // inflating runs in the background: the connection is over for the reader once the
  // inflater has given out everything that arrived before the close
  c.socket.on('close', () => inflate.end());
  inflate.on('close', () => {
    closed = true;
    wake();
  });
  inflate.on('data', (d: Buffer) => {
    text += d.toString('latin1');
    wake();
  });
  deflate.on('data', (d: Buffer) => c.socket.write(d));
  return {
    get wire() {
      return wire;
    },
    /** Sends `before` (pipelined commands) and then the command, and reads up to its tagged reply. */
    async cmd(tag: string, line: string, before = ''): Promise<string> {
      deflate.write(`${before}${tag} ${line}\r\n`);
      deflate.flush(zc.Z_SYNC_FLUSH);
      const re = new RegExp(`^${tag} (OK|NO|BAD)[^\\r]*\\r\\n`, 'm');
      for (;;) {
        const m = re.exec(text);
        if (m) {
          const out = text.slice(0, m.index + m[0].length);
          text = text.slice(m.index + m[0].length);
          return out;
        }
        if (closed) throw new Error(`connection closed before the ${tag} reply; got ${text.slice(0, 200)}`);
        await new Promise<void>((res) => waiters.push(res));
      }
    },
  };
}

void describe('COMPRESS=DEFLATE', () => {
  void it(
    'is offered once logged in, refuses other mechanisms and a second COMPRESS, and compresses both ways',
    { timeout: 120_000 },
    async () => {
      const c = await RawImap.connect(r.ports.imaps, { tls: true });
      const greeting = await c.until(/^\* OK/m);
      assert.doesNotMatch(greeting, /COMPRESS/);
      assert.match(await c.cmd('a', 'COMPRESS DEFLATE'), /^a BAD/m, 'not before login');
      assert.match(await c.cmd('b', `LOGIN ${USER} "${PASSWORD}"`), /^b OK .*COMPRESS=DEFLATE/m);
      assert.match(await c.cmd('c', 'COMPRESS LZW'), /^c BAD/m);
      assert.match(await c.cmd('d', 'COMPRESS DEFLATE'), /^d OK/m);

      const z = compressedClient(c);
      assert.match(await z.cmd('e', 'SELECT INBOX'), /^\* 1 EXISTS/m);
      const before = z.wire;
      const fetched = await z.cmd('f', 'FETCH 1 (BODY.PEEK[])');
      const stored = readFileSync(p.inbox(USER)[0]!);
      assert.ok(
        fetched.includes(`BODY[] {${stored.length}}\r\n${stored.toString('latin1')})`),
        'the message, byte for byte',
      );
      // the wire carried far less than the message itself
      assert.ok(
        z.wire - before < stored.length / 10,
        `${z.wire - before} bytes on the wire for ${stored.length}`,
      );
      assert.match(await z.cmd('g', 'COMPRESS DEFLATE'), /^g NO \[COMPRESSIONACTIVE\]/m);
      // a few KB that inflate to 20,000 commands: read as the session gets through them,
      // every one answered, in order
      const many = Array.from({ length: 19_999 }, (_, i) => `n${i} NOOP\r\n`).join('');
      const last = await z.cmd('n19999', 'NOOP', many);
      assert.equal((last.match(/^n\d+ OK/gm) ?? []).length, 20_000);
      assert.match(last, /^n0 OK[^]*^n19999 OK/m);
      const caps = await z.cmd('h', 'CAPABILITY');
      assert.doesNotMatch(caps, /COMPRESS=DEFLATE/);
      assert.match(await z.cmd('i', 'LOGOUT'), /^\* BYE/m);
      await c.waitClosed(60_000);
    },
  );

  void it('imapflow turns it on by itself', { timeout: 60_000 }, async () => {
    const client = new ImapFlow({
      host: '127.0.0.1',
      port: r.ports.imap,
      secure: false,
      doSTARTTLS: false,
      auth: { user: USER, pass: PASSWORD },
      logger: false,
    });
    const counted = async () =>
      (await r.rt.registry.getSingleMetric('mailyard_retrieval_compressed_sessions_total')!.get()).values[0]
        ?.value ?? 0;
    const beforeCount = await counted();
    await client.connect();
    const lock = await client.getMailboxLock('INBOX');
    const msg = await client.fetchOne('1', { source: true });
    lock.release();
    await client.logout();
    assert.ok(msg && msg.source!.toString('latin1').endsWith(BODY));
    assert.equal(await counted(), beforeCount + 1);
  });

  void it('is not offered, and refused, with IMAP_COMPRESS=no', { timeout: 60_000 }, async () => {
    const off = await startRetrieval(p, { imap_compress: 'no' });
    try {
      const c = await RawImap.connect(off.ports.imap);
      await c.until(/^\* OK/m);
      const login = await c.cmd('a', `LOGIN ${USER} "${PASSWORD}"`);
      assert.match(login, /^a OK/m);
      assert.doesNotMatch(login, /COMPRESS/);
      assert.match(await c.cmd('b', 'COMPRESS DEFLATE'), /^b BAD/m);
      assert.match(await c.cmd('c', 'NOOP'), /^c OK/m, 'and the session goes on uncompressed');
      c.socket.destroy();
    } finally {
      await off.stop();
    }
  });
});

void describe('reading ahead', () => {
  void it(
    'POP3: 2,000 pipelined commands are all answered, in order, though the client is read in steps',
    { timeout: 60_000 },
    async () => {
      const { connect } = await import('node:net');
      const s = connect({ host: '127.0.0.1', port: r.ports.pop3 });
      let text = '';
      let closed = false;
      const waiters: (() => void)[] = [];
      const wake = () => {
        for (const w of waiters.splice(0)) w();
      };
      s.on('data', (d: Buffer) => {
        text += d.toString('latin1');
        wake();
      });
      s.on('close', () => {
        closed = true;
        wake();
      });
      const until = async (re: RegExp) => {
        while (!re.test(text)) {
          if (closed) throw new Error(`connection closed; got ${text.slice(-200)}`);
          await new Promise<void>((res) => waiters.push(res));
        }
      };
      await until(/^\+OK/m);
      s.write(`USER ${USER}\r\nPASS ${PASSWORD}\r\n`);
      await until(/^\+OK.*\r\n\+OK.*\r\n/m);
      text = '';
      s.write('NOOP\r\n'.repeat(2000) + 'STAT\r\n');
      await until(/^\+OK 1 \d+\r\n/m);
      assert.equal((text.match(/^\+OK\r\n/gm) ?? []).length, 2000);
      s.destroy();
    },
  );
});
