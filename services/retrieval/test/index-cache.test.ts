// The persisted header index (mailyard.index.cache): written while FETCH reads headers,
// used after a restart and by other instances, robust to damage and to expunges made
// elsewhere. Message files are written straight into the Maildir, as a delivery would.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ImapFlow, type FetchQueryObject } from 'imapflow';
import { accountDir, INDEX_CACHE, IndexCacheFile } from '@mailyard/mailstore';
import { LineClient, waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, startRetrieval, type Retrieval } from './helpers.js';
import { INDEX_FORMAT } from '../src/message-cache.js';

let p: Platform;
const running = new Set<Retrieval>();

before(async () => {
  p = await startPlatform({ withDelivery: false });
});
after(async () => {
  for (const r of running) await r.stop();
  await p?.close();
});

async function start(): Promise<Retrieval> {
  const r = await startRetrieval(p);
  running.add(r);
  return r;
}

async function stop(r: Retrieval): Promise<void> {
  running.delete(r);
  await r.stop();
}

async function counter(r: Retrieval, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = r.rt.registry.getSingleMetric(name);
  if (!m) return 0;
  const { values } = await m.get();
  return values
    .filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))
    .reduce((a, v) => a + v.value, 0);
}

const headerReads = (r: Retrieval) =>
  counter(r, 'mailyard_retrieval_message_file_reads_total', { part: 'header' });
const fullReads = (r: Retrieval) =>
  counter(r, 'mailyard_retrieval_message_file_reads_total', { part: 'full' });

/** A new account whose INBOX holds `n` messages, written as files. */
async function mailbox(user: string, n: number): Promise<string> {
  await addAccount(p.directory, user);
  const dir = accountDir(p.maildir, user);
  for (const d of ['cur', 'new', 'tmp']) await fs.mkdir(join(dir, d), { recursive: true });
  for (let i = 1; i <= n; i++) {
    const msg = Buffer.from(
      [
        'Received: from mx.remote.example by mx.mailyard.test; Mon, 6 Jan 2025 10:00:00 +0000',
        `From: "Sender ${i}" <sender${i}@remote.example>`,
        `To: ${user}`,
        `Subject: Indexed message ${i}`,
        'Date: Mon, 6 Jan 2025 10:00:00 +0000',
        `Message-ID: <idx${i}@remote.example>`,
        'Content-Type: text/plain; charset=utf-8',
        '',
        `Body ${i}`,
        '',
      ].join('\r\n'),
    );
    await fs.writeFile(join(dir, 'new', `${1736157600 + i}.M${i}P1.test,S=${msg.length}`), msg);
  }
  return dir;
}

function client(r: Retrieval, user: string): ImapFlow {
  return new ImapFlow({
    host: '127.0.0.1',
    port: r.ports.imap,
    secure: false,
    doSTARTTLS: false,
    auth: { user, pass: PASSWORD },
    logger: false,
  });
}

/** Subjects by UID, from FETCH 1:* (UID ENVELOPE), and BODYSTRUCTURE types when asked. */
async function fetchAll(
  r: Retrieval,
  user: string,
  opts: { bodyStructure?: boolean } = {},
): Promise<Map<number, string>> {
  const c = client(r, user);
  await c.connect();
  await c.mailboxOpen('INBOX');
  const out = new Map<number, string>();
  for await (const m of c.fetch('1:*', { uid: true, envelope: true, bodyStructure: opts.bodyStructure })) {
    out.set(m.uid, `${m.envelope!.subject} from ${m.envelope!.from![0]!.address}`);
    if (opts.bodyStructure) assert.equal(m.bodyStructure!.type, 'text/plain');
  }
  await c.logout();
  return out;
}

/** Records and damaged lines in a folder's index file. */
async function indexFile(dir: string): Promise<{ keys: Set<string>; bad: number; foreign: boolean }> {
  const f = new IndexCacheFile<unknown>(dir, { encode: (v) => v, decode: (v) => v, format: INDEX_FORMAT });
  const r = await f.read();
  return { keys: new Set(r.records.map(([k]) => k)), bad: r.bad, foreign: r.foreign };
}

void describe('mailyard.index.cache', () => {
  const USER = 'index@example.test';
  const N = 30;
  let dir: string;
  let expected: Map<number, string>;

  void it('is written while FETCH reads headers, and a restart reads no message file for ENVELOPE or BODYSTRUCTURE', async () => {
    dir = await mailbox(USER, N);
    const a = await start();
    expected = await fetchAll(a, USER, { bodyStructure: true });
    assert.equal(expected.size, N);
    assert.equal(expected.get(1), 'Indexed message 1 from sender1@remote.example');
    assert.equal(await headerReads(a), N);
    await stop(a);
    const idx = await indexFile(dir);
    assert.equal(idx.keys.size, N);
    assert.equal(idx.bad, 0);
    // the restarted service answers from the index
    const b = await start();
    assert.deepEqual(await fetchAll(b, USER, { bodyStructure: true }), expected);
    assert.equal(await headerReads(b), 0);
    assert.equal(await fullReads(b), 0);
    await stop(b);
  });

  void it('ignores a truncated tail and a damaged record, and reads those messages again', async () => {
    const path = join(dir, INDEX_CACHE);
    const text = await fs.readFile(path, 'latin1');
    // damage the records of message 7 (their checksums no longer match); cut the file
    // in the middle of its last record, whose message (30) loses its other record too.
    // (Test 1 left two records per message: headers, then with BODYSTRUCTURE.)
    const lines = text
      .split('\n')
      .map((l) => (/Indexed message (7|30)\b/.test(l) ? l.replace(/Indexed/g, 'Indexxd') : l));
    const damaged = lines.join('\n');
    await fs.writeFile(path, damaged.slice(0, damaged.lastIndexOf('Indexxd message 30')), 'latin1');
    const a = await start();
    assert.deepEqual(await fetchAll(a, USER), expected);
    assert.equal(await headerReads(a), 2);
    await stop(a);
    const b = await start();
    assert.deepEqual(await fetchAll(b, USER), expected);
    assert.equal(await headerReads(b), 0);
    await stop(b);
  });

  void it('replaces a file that is not an index, and uses the new one after a restart', async () => {
    await fs.writeFile(join(dir, INDEX_CACHE), Buffer.from('\x00\xff garbage\nmore garbage\n', 'latin1'));
    const a = await start();
    assert.deepEqual(await fetchAll(a, USER), expected);
    assert.equal(await headerReads(a), N);
    await stop(a);
    const idx = await indexFile(dir);
    assert.equal(idx.foreign, false);
    assert.equal(idx.keys.size, N);
    const b = await start();
    assert.deepEqual(await fetchAll(b, USER), expected);
    assert.equal(await headerReads(b), 0);
    await stop(b);
  });

  void it('does not serve a message another instance expunged, though its record stays in the file', async () => {
    const a = await start();
    const b = await start();
    assert.deepEqual(await fetchAll(a, USER), expected);
    // a session on A stays in the folder while B expunges UID 5
    const ca = client(a, USER);
    await ca.connect();
    await ca.mailboxOpen('INBOX');
    const cb = client(b, USER);
    await cb.connect();
    await cb.mailboxOpen('INBOX');
    await cb.messageFlagsAdd('5', ['\\Deleted'], { uid: true });
    await cb.mailboxClose();
    await cb.logout();
    const gone = expected.get(5)!;
    const rest = new Map([...expected].filter(([uid]) => uid !== 5));
    // the open session learns of it at its next command and does not list it
    await ca.noop();
    const seen = new Map<number, string>();
    for await (const m of ca.fetch('1:*', { uid: true, envelope: true }))
      seen.set(m.uid, `${m.envelope!.subject} from ${m.envelope!.from![0]!.address}`);
    assert.deepEqual(seen, rest);
    await ca.logout();
    // a new session on A, and A after a restart, do not list it either
    assert.deepEqual(await fetchAll(a, USER), rest);
    await stop(a);
    const idx = await indexFile(dir);
    assert.ok([...idx.keys].length === N, 'the record of the expunged message is still in the file');
    const c = await start();
    const after = await fetchAll(c, USER);
    assert.deepEqual(after, rest);
    assert.ok(![...after.values()].includes(gone));
    assert.equal(await headerReads(c), 0);
    await stop(b);
    await stop(c);
  });

  void it('two instances reading a new folder at the same time leave a readable index', async () => {
    const user = 'index-race@example.test';
    const n = 1200;
    const raceDir = await mailbox(user, n);
    const a = await start();
    const b = await start();
    // number the messages first, so both instances see the same UIDs
    const c0 = client(a, user);
    await c0.connect();
    await c0.mailboxOpen('INBOX');
    await c0.logout();
    const [ra, rb] = await Promise.all([fetchAll(a, user), fetchAll(b, user)]);
    assert.equal(ra.size, n);
    assert.deepEqual(ra, rb);
    await stop(a);
    await stop(b);
    const idx = await indexFile(raceDir);
    assert.equal(idx.keys.size, n);
    assert.ok(idx.bad <= 1, `damaged lines: ${idx.bad}`);
    const c = await start();
    assert.deepEqual(await fetchAll(c, user), ra);
    assert.equal(await headerReads(c), 0);
    await stop(c);
  });

  void it('rewrites the file with the live records when most of it is dead', async () => {
    const user = 'index-compact@example.test';
    const n = 300;
    const cDir = await mailbox(user, n);
    const a = await start();
    await fetchAll(a, user);
    await stop(a);
    // another tool (or a Dovecot on the same Maildir) removes two thirds of the messages
    const names = (await fs.readdir(join(cDir, 'cur'))).concat(await fs.readdir(join(cDir, 'new')));
    for (const name of names.filter((_, i) => i % 3 !== 0)) {
      await fs.unlink(join(cDir, 'cur', name)).catch(() => fs.unlink(join(cDir, 'new', name)));
    }
    const b = await start();
    const left = await fetchAll(b, user);
    assert.equal(left.size, n / 3);
    await waitFor(async () => (await counter(b, 'mailyard_retrieval_index_cache_rewrites_total')) === 1, {
      what: 'index rewrite',
    });
    await stop(b);
    const idx = await indexFile(cDir);
    assert.equal(idx.keys.size, n / 3);
    const c = await start();
    assert.deepEqual(await fetchAll(c, user), left);
    assert.equal(await headerReads(c), 0);
    await stop(c);
  });
});

void describe('a mail client listing from the index', () => {
  void it('answers BODY.PEEK[HEADER.FIELDS] of kept fields and INTERNALDATE after a restart without reading a file', async () => {
    const user = 'listing@example.test';
    await addAccount(p.directory, user);
    const dir = accountDir(p.maildir, user);
    for (const d of ['cur', 'new', 'tmp']) await fs.mkdir(join(dir, d), { recursive: true });
    // folded fields, a repeated field, LF line ends in one message (sent with CRLF, as
    // Dovecot sends them), a field no index keeps
    const crlf = [
      'Received: from mx.remote.example by mx.mailyard.test; Mon, 6 Jan 2025 10:00:00 +0000',
      'Subject: a folded',
      '  subject line',
      'From: A <a@remote.example>',
      'X-Priority: 1',
      'To: b@example.test',
      'X-Other: not indexed',
      'to: c@example.test',
      'Content-Type: text/plain;',
      '\tcharset=utf-8',
      '',
      'Body',
      '',
    ].join('\r\n');
    const lf = crlf.replace(/\r\n/g, '\n');
    const when = new Date('2025-01-06T10:00:00Z');
    for (const [i, text] of [crlf, lf].entries()) {
      const path = join(dir, 'new', `${1736157600 + i}.M${i}P1.test,S=${text.length}`);
      await fs.writeFile(path, text);
      await fs.utimes(path, when, when);
    }
    const listing = async (r: Retrieval, fields: string[]) => {
      const c = client(r, user);
      await c.connect();
      await c.mailboxOpen('INBOX');
      const out: { headers: string; date: string }[] = [];
      for await (const m of c.fetch('1:*', { uid: true, size: true, internalDate: true, headers: fields }))
        out.push({ headers: m.headers!.toString('latin1'), date: new Date(m.internalDate!).toISOString() });
      await c.logout();
      return out;
    };
    // what Thunderbird asks for
    const thunderbird = [
      'From',
      'To',
      'Cc',
      'Bcc',
      'Subject',
      'Date',
      'Message-ID',
      'Priority',
      'X-Priority',
    ];
    thunderbird.push('References', 'Newsgroups', 'In-Reply-To', 'Content-Type', 'Reply-To');
    const want = (nl: string) =>
      ['Subject: a folded', '  subject line', 'From: A <a@remote.example>', 'X-Priority: 1'].join(nl) +
      nl +
      ['To: b@example.test', 'to: c@example.test', 'Content-Type: text/plain;', '\tcharset=utf-8'].join(nl) +
      nl +
      '\r\n';

    const a = await start();
    const first = await listing(a, thunderbird);
    assert.deepEqual(first, [
      { headers: want('\r\n'), date: when.toISOString() },
      { headers: want('\r\n'), date: when.toISOString() },
    ]);
    assert.equal(await headerReads(a), 2);
    await stop(a);

    const b = await start();
    assert.deepEqual(await listing(b, thunderbird), first, 'the same bytes from the index');
    assert.equal(await headerReads(b), 0, 'no message file read after the restart');
    assert.equal(await fullReads(b), 0);
    // a field the index does not keep is read from the file
    const other = await listing(b, ['X-Other', 'Subject']);
    assert.equal(other[0]!.headers, 'Subject: a folded\r\n  subject line\r\nX-Other: not indexed\r\n\r\n');
    assert.ok((await headerReads(b)) + (await fullReads(b)) > 0);
    await stop(b);
  });

  /**
   * A mailbox of one message whose index file a version before wrote, in `format`, with
   * `fields` after the file name; Retrieval started on it.
   */
  const withOldIndex = async (user: string, msg: string, format: string, fields: unknown[]) => {
    await addAccount(p.directory, user);
    const dir = accountDir(p.maildir, user);
    for (const d of ['cur', 'new', 'tmp']) await fs.mkdir(join(dir, d), { recursive: true });
    const base = `1736157600.M1P1.test,S=${msg.length}`;
    await fs.writeFile(join(dir, 'new', base), msg);
    const old = new IndexCacheFile<unknown>(dir, { encode: (v) => v, decode: (v) => v, format });
    await old.append([[base, fields]]);
    return start();
  };

  /** FETCH 1 of the user's INBOX, for what `query` asks. */
  const fetchFirst = async (r: Retrieval, user: string, query: FetchQueryObject) => {
    const c = client(r, user);
    await c.connect();
    await c.mailboxOpen('INBOX');
    const m = await c.fetchOne('1', query);
    await c.logout();
    assert.ok(m);
    return m;
  };

  void it('renders the ENVELOPEs an index of the previous format holds again', async () => {
    const user = 'oldindex@example.test';
    const msg = 'From: alice@remote.example (Alice Example)\r\nSubject: comment name\r\n\r\nBody\r\n';
    // the file as the version before wrote it: the comment was not taken as the name
    const r = await withOldIndex(user, msg, 'm2', [
      2,
      '(NIL "comment name" ((NIL NIL "alice" "remote.example")) ((NIL NIL "alice" "remote.example")) ((NIL NIL "alice" "remote.example")) NIL NIL NIL NIL NIL)',
      'from:alice@remote.example (Alice Example)',
      msg.length,
      null,
      0,
    ]);
    const c = client(r, user);
    await c.connect();
    await c.mailboxOpen('INBOX');
    const from: { name?: string; address?: string }[] = [];
    for await (const m of c.fetch('1:*', { envelope: true })) from.push(...m.envelope!.from!);
    await c.logout();
    assert.deepEqual(from, [{ name: 'Alice Example', address: 'alice@remote.example' }]);
    assert.equal(await headerReads(r), 1);
    await stop(r);
  });

  void it('renders the BODYSTRUCTUREs an index of the previous format holds again', async () => {
    const user = 'oldstructure@example.test';
    const msg =
      'From: a@remote.example\r\nSubject: empty boundary\r\nMIME-Version: 1.0\r\n' +
      'Content-Type: multipart/alternative; boundary=""\r\n\r\n--\r\nContent-Type: text/plain\r\n\r\ntext\r\n----\r\n';
    // the version before took boundary="" for none: one empty part
    const empty = '("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0';
    const r = await withOldIndex(user, msg, 'm3', [
      3,
      '(NIL "empty boundary" ((NIL NIL "a" "remote.example")) ((NIL NIL "a" "remote.example")) ((NIL NIL "a" "remote.example")) NIL NIL NIL NIL NIL)',
      'from:a@remote.example\r\nsubject:empty boundary',
      msg.length,
      null,
      0,
      `(${empty} NIL NIL NIL NIL) "ALTERNATIVE" ("BOUNDARY" "") NIL NIL NIL)`,
      `(${empty}) "ALTERNATIVE")`,
    ]);
    const m = await fetchFirst(r, user, { bodyStructure: true });
    assert.deepEqual(
      m.bodyStructure?.childNodes?.map((n) => [n.type, n.size]),
      [['text/plain', 4]],
    );
    await stop(r);
  });

  void it('gives a file with LF line ends the size and header lines an index of the previous format holds as on disk, as sent', async () => {
    const user = 'oldsize@example.test';
    const msg = 'From: a@remote.example\nSubject: LF line ends\n\nBody\n';
    // the version before kept the size on disk, and the header lines as they are there
    const r = await withOldIndex(user, msg, 'm4', [
      4,
      '(NIL "LF line ends" ((NIL NIL "a" "remote.example")) ((NIL NIL "a" "remote.example")) ((NIL NIL "a" "remote.example")) NIL NIL NIL NIL NIL)',
      'From: a@remote.example\nSubject: LF line ends\n',
      msg.length,
      null,
      0,
    ]);
    const m = await fetchFirst(r, user, { size: true, headers: ['Subject'] });
    assert.equal(m.size, msg.length + 4);
    assert.equal(m.headers!.toString(), 'Subject: LF line ends\r\n\r\n');
    await stop(r);
  });

  void it('a header too long to keep whole, and a record an older version appended, are answered from the file', async () => {
    const user = 'longheader@example.test';
    await addAccount(p.directory, user);
    const dir = accountDir(p.maildir, user);
    for (const d of ['cur', 'new', 'tmp']) await fs.mkdir(join(dir, d), { recursive: true });
    // 2.5 MiB of header before the Subject: past what is read of a header block
    const long = 'X-Filler: ' + 'y'.repeat(70) + '\r\n';
    const big =
      'From: a@remote.example\r\n' +
      long.repeat(Math.ceil((2.5 * 1024 * 1024) / long.length)) +
      'Subject: at the end\r\n\r\nBody\r\n';
    await fs.writeFile(join(dir, 'new', `1736157600.M1P1.test,S=${big.length}`), big);
    const small = 'From: b@remote.example\r\nSubject: small\r\n\r\nBody\r\n';
    const smallBase = `1736157601.M2P1.test,S=${small.length}`;
    await fs.writeFile(join(dir, 'new', smallBase), small);
    // an instance of the previous version appended a record in its own layout to our file
    const file = new IndexCacheFile<unknown>(join(dir), {
      encode: (v) => v,
      decode: (v) => v,
      format: INDEX_FORMAT,
    });
    await file.append([
      [smallBase, ['("x" "wrong" NIL NIL NIL NIL NIL NIL NIL NIL)', 'subject:wrong', small.length, null]],
    ]);

    const r = await start();
    const c = client(r, user);
    await c.connect();
    await c.mailboxOpen('INBOX');
    const got: string[] = [];
    for await (const m of c.fetch('1:*', { uid: true, headers: ['Subject', 'From'] }))
      got.push(m.headers!.toString());
    await c.logout();
    assert.deepEqual(got, [
      'From: a@remote.example\r\nSubject: at the end\r\n\r\n',
      'From: b@remote.example\r\nSubject: small\r\n\r\n',
    ]);
    await stop(r);
  });
});

void describe('the size of a message with LF line ends', () => {
  /** A message of `lines` body lines, each ending in `eol`. */
  const text = (subject: string, eol: string, lines: number) =>
    Buffer.from(
      [
        `From: a@remote.example`,
        `Subject: ${subject}`,
        '',
        ...Array.from({ length: lines }, (_, i) => `line ${i}`),
      ].join(eol) + eol,
    );
  /** Its size with every line end CRLF, as sent. */
  const sent = (b: Buffer) => b.length + (b.toString('latin1').match(/(?<!\r)\n/g)?.length ?? 0);

  /** RFC822.SIZE of every message, by sequence number, from FETCH 1:* (RFC822.SIZE) alone. */
  async function sizes(r: Retrieval, user: string): Promise<number[]> {
    const c = client(r, user);
    await c.connect();
    await c.mailboxOpen('INBOX');
    const out: number[] = [];
    for await (const m of c.fetch('1:*', { size: true })) out.push(m.size!);
    await c.logout();
    return out;
  }

  /** POP3's LIST, and the octets RETR sends of each message. */
  async function pop3(r: Retrieval, user: string): Promise<{ list: number[]; retr: number[] }> {
    const c = await LineClient.connect(r.ports.pop3);
    const lines = async (): Promise<string[]> => {
      const out: string[] = [];
      for (let l = await c.line(); l !== '.'; l = await c.line()) out.push(l!.replace(/^\./, ''));
      return out;
    };
    assert.match((await c.line())!, /^\+OK/);
    c.write(`USER ${user}\r\nPASS ${PASSWORD}\r\nLIST\r\n`);
    assert.match((await c.line())!, /^\+OK/);
    assert.match((await c.line())!, /^\+OK/);
    assert.match((await c.line())!, /^\+OK/);
    const list = (await lines()).map((l) => Number(l.split(' ')[1]));
    const retr: number[] = [];
    for (let n = 1; n <= list.length; n++) {
      c.write(`RETR ${n}\r\n`);
      assert.match((await c.line())!, new RegExp(`^\\+OK ${list[n - 1]} octets`));
      retr.push((await lines()).reduce((a, l) => a + l.length + 2, 0));
    }
    c.write('QUIT\r\n');
    await c.line();
    c.socket.destroy();
    return { list, retr };
  }

  void it('is the size FETCH and RETR send, found once with the header, never by reading the file for each FETCH', async () => {
    const user = 'lfsize@example.test';
    await addAccount(p.directory, user);
    const dir = accountDir(p.maildir, user);
    for (const d of ['cur', 'new', 'tmp']) await fs.mkdir(join(dir, d), { recursive: true });
    // larger than what is read of a header block
    const lf = text('LF line ends', '\n', 5000);
    const crlf = text('CRLF line ends', '\r\n', 5000);
    const small = text('small, LF line ends', '\n', 3);
    const files: [string, Buffer][] = [
      // another delivery agent's (Postfix's virtual(8), procmail): no sizes in the name
      ['1736157601.M1P1.old', lf],
      // moved from Dovecot: its size with CRLF line ends as W=
      [`1736157602.M2P1.old,S=${lf.length},W=${sent(lf)}`, lf],
      // Mailyard's delivery: CRLF line ends, S=
      [`1736157603.M3P1.new,S=${crlf.length}`, crlf],
      // S= on a file with LF line ends (Courier's maildrop)
      [`1736157604.M4P1.old,S=${lf.length}`, lf],
      ['1736157605.M5P1.old', small],
    ];
    for (const [name, data] of files) await fs.writeFile(join(dir, 'new', name), data);
    const want = files.map(([, data]) => sent(data));

    const a = await start();
    assert.deepEqual(await sizes(a, user), want);
    // the two large files without W= whose first lines end in LF alone were read whole, once
    assert.equal(await fullReads(a), 2);
    assert.deepEqual(await sizes(a, user), want);
    assert.equal(await fullReads(a), 2);
    const c = client(a, user);
    await c.connect();
    await c.mailboxOpen('INBOX');
    const bodies: number[] = [];
    for await (const m of c.fetch('1:*', { source: true })) bodies.push(m.source!.length);
    assert.deepEqual(bodies, want, 'BODY[] is sent with CRLF line ends');
    // RFC 9051 §6.4.4: LARGER and SMALLER compare RFC822.SIZE
    const seqs = (match: (n: number) => boolean) => want.flatMap((n, i) => (match(n) ? [i + 1] : []));
    assert.deepEqual(
      await c.search({ larger: lf.length }),
      seqs((n) => n > lf.length),
    );
    assert.deepEqual(
      await c.search({ smaller: sent(lf) }),
      seqs((n) => n < sent(lf)),
    );
    await c.logout();
    assert.deepEqual(await pop3(a, user), { list: want, retr: want });
    await stop(a);

    // a restart answers from the index: no message file is read
    const b = await start();
    assert.deepEqual(await sizes(b, user), want);
    assert.deepEqual((await pop3(b, user)).list, want);
    assert.equal(await headerReads(b), 0);
    assert.equal(await fullReads(b), 0);
    await stop(b);
  });
});
