// Races between sessions of one account: several at once on one instance, on two
// instances (as two processes would be: they share only the files), and a FETCH that
// meets another session's EXPUNGE.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, sampleMessage, startRetrieval, type Retrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

let p: Platform;
let r1: Retrieval;
let r2: Retrieval;
before(async () => {
  p = await startPlatform({ withDelivery: false });
  r1 = await startRetrieval(p);
  r2 = await startRetrieval(p);
});
after(async () => {
  await r1?.stop();
  await r2?.stop();
  await p?.close();
});

async function login(port: number, user: string): Promise<RawImap> {
  const c = await RawImap.connect(port);
  await c.until(/^\* OK/m);
  const out = await c.cmd('l', `LOGIN "${user}" "${PASSWORD}"`, 15_000);
  assert.match(out, /^l OK/m, out);
  return c;
}

test(
  'simultaneous first logins on two instances subscribe every default folder',
  { timeout: 120_000 },
  async () => {
    for (let round = 0; round < 4; round++) {
      const user = `subs${round}@example.test`;
      await addAccount(p.directory, user);
      const clients = await Promise.all([r1, r2, r1, r2, r1, r2].map((r) => login(r.ports.imap, user)));
      try {
        const out = await clients[0]!.cmd('s', 'LSUB "" "*"');
        for (const name of ['Sent', 'Drafts', 'Junk', 'Trash', 'Archive'])
          assert.match(out, new RegExp(`^\\* LSUB \\([^)]*\\) "/" "?${name}"?\\r$`, 'm'), out);
      } finally {
        for (const c of clients) c.close();
      }
    }
  },
);

test('SUBSCRIBE from many sessions at once loses none', { timeout: 120_000 }, async () => {
  const user = 'manysubs@example.test';
  await addAccount(p.directory, user);
  const first = await login(r1.ports.imap, user);
  const names = Array.from({ length: 8 }, (_, i) => `F${i}`);
  for (const n of names) assert.match(await first.cmd('c', `CREATE ${n}`), /^c OK/m);
  const clients = await Promise.all(names.map((_, i) => login((i % 2 ? r2 : r1).ports.imap, user)));
  try {
    const outs = await Promise.all(clients.map((c, i) => c.cmd('s', `SUBSCRIBE ${names[i]}`, 15_000)));
    for (const o of outs) assert.match(o, /^s OK/m);
    const out = await first.cmd('l', 'LSUB "" "F*"');
    for (const n of names) assert.match(out, new RegExp(`^\\* LSUB \\([^)]*\\) "/" "?${n}"?\\r$`, 'm'), out);
  } finally {
    first.close();
    for (const c of clients) c.close();
  }
});

/** FETCH items that read the message files, the index, or both. */
const FETCHES = [
  'FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE ENVELOPE)',
  'FETCH 1:* (BODY.PEEK[])',
  'FETCH 1:* (BODYSTRUCTURE)',
  'FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM X-MAILER)])',
  'FETCH 1:* (BODY.PEEK[1] BINARY.PEEK[1])',
  'FETCH 1:* (BODY[])',
  'UID FETCH 1:* (FLAGS ENVELOPE)',
];

test(
  'a FETCH racing another session’s EXPUNGE answers what still exists (RFC 2180 §4.1)',
  { timeout: 180_000 },
  async () => {
    const user = 'race-expunge@example.test';
    await addAccount(p.directory, user);
    const reader = await login(r1.ports.imap, user);
    const writer = await login(r2.ports.imap, user);
    try {
      for (let round = 0; round < 14; round++) {
        // a fresh batch of messages that neither the reader nor the index has seen
        for (let i = 0; i < 20; i++) {
          const msg = sampleMessage(round * 100 + i, ' '.repeat(i * 50));
          writer.send(`a APPEND INBOX {${Buffer.byteLength(msg)}+}\r\n${msg}\r\n`);
          await writer.until(/^a (OK|NO|BAD)[^\n]*\n/m);
        }
        assert.match(await reader.cmd('s', 'SELECT INBOX'), /^s OK/m);
        assert.match(await writer.cmd('w', 'SELECT INBOX'), /^w OK/m);
        assert.match(await writer.cmd('d', 'STORE 1:* +FLAGS.SILENT (\\Deleted)'), /^d OK/m);
        // the reader's view still names every message when the files go
        reader.send(`f ${FETCHES[round % FETCHES.length]}\r\n`);
        writer.send('x EXPUNGE\r\n');
        const [fetched] = await Promise.all([
          reader.until(/^f (OK|NO|BAD)[^\n]*\n/m, 30_000),
          writer.until(/^x (OK|NO|BAD)/m, 30_000),
        ]);
        const tagged = /^f (OK|NO|BAD)[^\r\n]*/m.exec(fetched)![0];
        assert.doesNotMatch(tagged, /SERVERBUG|BAD/, fetched.slice(-2000));
        // RFC 9051 §7.5.1: no EXPUNGE during a FETCH by sequence number
        if (!FETCHES[round % FETCHES.length]!.startsWith('UID'))
          assert.doesNotMatch(fetched, /^\* \d+ EXPUNGE/m);
        assert.match(await reader.cmd('n', 'NOOP'), /^n OK/m);
        assert.match(await writer.cmd('c', 'CLOSE'), /^c OK/m);
      }
    } finally {
      reader.close();
      writer.close();
    }
  },
);

/**
 * A new account with one session on each instance and three messages, the second
 * expunged by the writer (on r2) after the reader (on r1) selected INBOX: the reader
 * has not been told.
 */
async function secondExpungedUnseen(user: string, firstSample: number) {
  await addAccount(p.directory, user);
  const reader = await login(r1.ports.imap, user);
  const writer = await login(r2.ports.imap, user);
  try {
    for (let i = 0; i < 3; i++) {
      const msg = sampleMessage(firstSample + i);
      writer.send(`a APPEND INBOX {${Buffer.byteLength(msg)}+}\r\n${msg}\r\n`);
      assert.match(await writer.until(/^a (OK|NO|BAD)[^\n]*\n/m), /^a OK/m);
    }
    assert.match(await reader.cmd('s', 'SELECT INBOX'), /\* 3 EXISTS/);
    assert.match(await writer.cmd('w', 'SELECT INBOX'), /^w OK/m);
    assert.match(await writer.cmd('d', 'STORE 2 +FLAGS.SILENT (\\Deleted)'), /^d OK/m);
    assert.match(await writer.cmd('x', 'EXPUNGE'), /^\* 2 EXPUNGE/m);
  } catch (err) {
    reader.close();
    writer.close();
    throw err;
  }
  return { reader, writer };
}

test(
  'messages expunged elsewhere are left out of FETCH and STORE, and said so',
  { timeout: 60_000 },
  async () => {
    const { reader, writer } = await secondExpungedUnseen('expunged-elsewhere@example.test', 900);
    try {
      const fetched = await reader.cmd('f', 'FETCH 1:3 (BODY.PEEK[])');
      assert.match(fetched, /^\* 1 FETCH /m);
      assert.doesNotMatch(fetched, /^\* 2 FETCH /m);
      assert.match(fetched, /^\* 3 FETCH /m);
      assert.doesNotMatch(fetched, /EXPUNGE\r\n/);
      assert.match(fetched, /^f OK \[EXPUNGEISSUED\]/m);

      const stored = await reader.cmd('t', 'STORE 1:3 +FLAGS (\\Flagged)');
      assert.doesNotMatch(stored, /SERVERBUG|^t BAD/m);
      assert.doesNotMatch(stored, /EXPUNGE\r\n/);
      // the reader selected first: the messages are \Recent in its session (RFC 3501 §2.3.2)
      assert.match(stored, /^\* 3 FETCH \(FLAGS \(\\Flagged \\Recent\)\)/m);

      assert.match(await reader.cmd('n', 'NOOP'), /^\* 2 EXPUNGE\r\n[^]*^n OK/m);
      const after = await reader.cmd('g', 'FETCH 1:2 (UID FLAGS)');
      assert.match(after, /^\* 1 FETCH \(UID 1 FLAGS \(\\Flagged \\Recent\)\)/m);
      assert.match(after, /^\* 2 FETCH \(UID 3 FLAGS \(\\Flagged \\Recent\)\)/m);
    } finally {
      reader.close();
      writer.close();
    }
  },
);

test(
  'COPY and MOVE naming a message expunged elsewhere copy nothing and say so (RFC 2180 §4.4.1)',
  { timeout: 60_000 },
  async () => {
    const { reader, writer } = await secondExpungedUnseen('copy-expunged@example.test', 950);
    try {
      // the reader has not looked since: the copy finds the file gone
      const moved = await reader.cmd('m', 'UID MOVE 1:3 Trash');
      assert.match(moved, /^\* 2 EXPUNGE\r\n[^]*^m NO \[EXPUNGEISSUED\]/m, moved);
      assert.match(await reader.cmd('t', 'STATUS Trash (MESSAGES)'), /MESSAGES 0\)/);
      assert.match(await reader.cmd('u', 'UID SEARCH ALL'), /^\* SEARCH 1 3\r$/m);

      // expunged again; the reader's FETCH sees it gone but may not tell it (RFC 9051 §7.5.1)
      assert.match(await writer.cmd('d2', 'STORE 2 +FLAGS.SILENT (\\Deleted)'), /^d2 OK/m);
      assert.match(await writer.cmd('x2', 'EXPUNGE'), /^\* 2 EXPUNGE/m);
      assert.match(await reader.cmd('f', 'FETCH 1:2 (UID)'), /^f OK/m);
      const copied = await reader.cmd('c', 'COPY 1:2 Trash');
      assert.match(copied, /^c NO \[EXPUNGEISSUED\]/m, copied);
      assert.doesNotMatch(copied, /EXPUNGE\r\n/, copied);
      const status = await reader.cmd('t2', 'STATUS Trash (MESSAGES)');
      assert.match(status, /MESSAGES 0\)/);
      assert.match(status, /^\* 2 EXPUNGE\r\n[^]*^t2 OK/m);
      assert.match(await reader.cmd('c2', 'COPY 1 Trash'), /^c2 OK \[COPYUID \d+ 1 1\]/m);
    } finally {
      reader.close();
      writer.close();
    }
  },
);
