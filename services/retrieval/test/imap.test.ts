import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ImapFlow } from 'imapflow';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, sampleMessage, sendRaw, startRetrieval, type Retrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

let p: Platform;
let r: Retrieval;
const USER = 'user@example.test';

before(async () => {
  p = await startPlatform();
  await addAccount(p.directory, USER);
  r = await startRetrieval(p);
  for (let i = 1; i <= 3; i++) await sendRaw(p, USER, sampleMessage(i));
});
after(async () => {
  await r?.stop();
  await p?.close();
});

function client(port = r.ports.imap, secure = false): ImapFlow {
  return new ImapFlow({
    host: '127.0.0.1',
    port,
    secure,
    doSTARTTLS: false,
    auth: { user: USER, pass: PASSWORD },
    logger: process.env.IMAP_DEBUG
      ? (Object.fromEntries(
          ['debug', 'info', 'warn', 'error'].map((k) => [
            k,
            (o: unknown) => console.error(JSON.stringify(o)),
          ]),
        ) as never)
      : false,
    tls: { rejectUnauthorized: false },
  });
}

void describe('IMAP with imapflow', () => {
  void it('lists folders with special-use attributes', async () => {
    const c = client();
    await c.connect();
    const list = await c.list();
    const byPath = new Map(list.map((f) => [f.path, f]));
    for (const [name, use] of [
      ['Sent', '\\Sent'],
      ['Drafts', '\\Drafts'],
      ['Junk', '\\Junk'],
      ['Trash', '\\Trash'],
      ['Archive', '\\Archive'],
    ]) {
      assert.equal(byPath.get(name!)?.specialUse, use, name);
    }
    assert.ok(byPath.has('INBOX'));
    await c.logout();
  });

  void it('selects INBOX and fetches byte-exact bodies, envelope, structure', async () => {
    const c = client();
    await c.connect();
    const mb = await c.mailboxOpen('INBOX');
    assert.equal(mb.exists, 3);
    const msgs = [];
    for await (const m of c.fetch('1:*', {
      uid: true,
      envelope: true,
      flags: true,
      source: true,
      bodyStructure: true,
      size: true,
      internalDate: true,
    })) {
      msgs.push(m);
    }
    assert.equal(msgs.length, 3);
    const m = msgs[0]!;
    assert.equal(m.envelope!.subject, 'Test message 1');
    assert.equal(m.envelope!.from![0]!.address, 'sender@remote.example');
    assert.equal(m.envelope!.from![0]!.name, 'Sender Name');
    assert.equal(m.bodyStructure!.type, 'text/plain');
    const files = p.inbox(USER).map((f) => require_('node:fs').readFileSync(f));
    assert.ok(
      files.some((f: Buffer) => f.equals(m.source!)),
      'source is the stored file byte for byte',
    );
    assert.equal(m.size, m.source!.length);
    assert.ok(m.internalDate instanceof Date);
    await c.logout();
  });

  void it('stores flags, searches, copies, moves, expunges and appends', async () => {
    const c = client();
    await c.connect();
    await c.mailboxOpen('INBOX');
    await c.messageFlagsAdd('1', ['\\Seen', '\\Flagged']);
    const f = await c.fetchOne('1', { flags: true });
    assert.ok(f && f.flags!.has('\\Seen') && f.flags!.has('\\Flagged'));
    assert.deepEqual(await c.search({ seen: false }), [2, 3]);
    assert.deepEqual(await c.search({ subject: 'message 2' }), [2]);
    assert.deepEqual(await c.search({ body: 'OF MESSAGE 3' }), [3]);
    const copy = await c.messageCopy('1', 'Archive');
    assert.ok(copy && copy.uidMap!.size === 1);
    const move = await c.messageMove('2', 'Junk');
    assert.ok(move);
    assert.equal(c.mailbox && (c.mailbox as { exists: number }).exists, 2);
    await c.messageFlagsAdd('1', ['\\Deleted']);
    await c.messageDelete('1');
    const st = (await c.status('INBOX', { messages: true, unseen: true })) as { messages: number };
    assert.equal(st.messages, 1);
    const app = await c.append('Drafts', Buffer.from(sampleMessage(99)), ['\\Draft']);
    assert.ok(app && app.uid === 1);
    const junk = (await c.status('Junk', { messages: true })) as { messages: number };
    assert.equal(junk.messages, 1);
    await c.logout();
  });

  void it('keeps UIDs across a restart of the service', async () => {
    const c = client();
    await c.connect();
    const mb = await c.mailboxOpen('INBOX');
    const uids = await c.search({ all: true }, { uid: true });
    await c.logout();
    await r.stop();
    r = await startRetrieval(p);
    const c2 = client();
    await c2.connect();
    const mb2 = await c2.mailboxOpen('INBOX');
    assert.equal(mb2.uidValidity, mb.uidValidity);
    assert.deepEqual(await c2.search({ all: true }, { uid: true }), uids);
    await c2.logout();
  });

  void it('announces new delivery to an idling session', async () => {
    const c = client();
    await c.connect();
    await c.mailboxOpen('INBOX');
    const before = (c.mailbox as { exists: number }).exists;
    const seen = new Promise<number>((resolve) => c.on('exists', (d: { count: number }) => resolve(d.count)));
    void c.idle();
    const t0 = Date.now();
    await sendRaw(p, USER, sampleMessage(50));
    const count = await seen;
    assert.equal(count, before + 1);
    // told by the event, not found by IDLE's 30 s poll (a busy machine may take seconds)
    assert.ok(Date.now() - t0 < 15_000, `announced after ${Date.now() - t0} ms`);
    await c.logout();
  });

  void it('tells an idling session of changes that come together in one answer', async () => {
    // a wait long enough for three APPENDs on a busy machine (the default is Dovecot's 500 ms)
    const slow = await startRetrieval(p, { imap_idle_notify_delay: '3s' });
    const idler = await RawImap.connect(slow.ports.imap);
    const other = client(slow.ports.imap);
    try {
      await idler.until(/^\* OK/m);
      assert.match(await idler.cmd('l', `LOGIN ${USER} "${PASSWORD}"`), /^l OK/m);
      const selected = await idler.cmd('s', 'SELECT INBOX');
      const before = Number(/^\* (\d+) EXISTS/m.exec(selected)![1]);
      idler.send('i IDLE\r\n');
      await idler.until(/^\+ /m);
      await other.connect();
      for (let i = 0; i < 3; i++) await other.append('INBOX', sampleMessage(100 + i));
      const told = await idler.until(new RegExp(`^\\* ${before + 3} EXISTS`, 'm'), 20_000);
      assert.deepEqual(
        told.match(/^\* \d+ EXISTS/gm),
        [`* ${before + 3} EXISTS`],
        'one answer for the three',
      );
      idler.send('DONE\r\n');
      await idler.until(/^i OK/m);
    } finally {
      idler.close();
      await other.logout().catch(() => undefined);
      await slow.stop();
    }
  });

  void it('works over implicit TLS on the IMAPS port', async () => {
    const c = client(r.ports.imaps, true);
    await c.connect();
    await c.mailboxOpen('INBOX');
    await c.logout();
  });

  void it('answers repeated logins from the cache of verified credentials, unless AUTH_CACHE_TTL is 0', async () => {
    const hits = async (x: Retrieval) => {
      const text = await x.rt.registry.getSingleMetricAsString('mailyard_retrieval_login_cache_hits_total');
      return Number(/protocol="imap"} (\d+)/.exec(text)?.[1] ?? 0);
    };
    const loginTwice = async (port: number) => {
      for (let i = 0; i < 2; i++) {
        const c = client(port);
        await c.connect();
        await c.logout();
      }
    };
    const before = await hits(r);
    await loginTwice(r.ports.imap);
    assert.ok((await hits(r)) >= before + 1, 'the second login at least came from the cache');
    const off = await startRetrieval(p, { auth_cache_ttl: 0 });
    try {
      await loginTwice(off.ports.imap);
      assert.equal(await hits(off), 0);
    } finally {
      await off.stop();
    }
  });
});

import { createRequire } from 'node:module';
const require_ = createRequire(import.meta.url);

void describe('IDLE with input pipelined after it (RFC 2177)', { timeout: 60_000 }, () => {
  async function idler(): Promise<RawImap> {
    const c = await RawImap.connect(r.ports.imap);
    await c.until(/^\* OK/m);
    assert.match(await c.cmd('l', `LOGIN ${USER} "${PASSWORD}"`), /^l OK/m);
    assert.match(await c.cmd('s', 'SELECT INBOX'), /^s OK/m);
    return c;
  }

  void it('ends IDLE with a DONE sent in the same packet, and runs the command after it', async () => {
    const c = await idler();
    try {
      c.send('a IDLE\r\nDONE\r\nb NOOP\r\n');
      const out = await c.until(/^b (OK|NO|BAD)/m);
      assert.match(out, /^\+ idling\r\na OK IDLE terminated\r\n/m, out);
      assert.match(out, /^b OK/m, out);
    } finally {
      c.close();
    }
  });

  void it('reads any other line as the end of IDLE (BAD Expected DONE), literal announcement and all', async () => {
    const c = await idler();
    try {
      // what Dovecot answers: the line is IDLE's, and what follows it a command again
      c.send('a IDLE\r\nb NOOP {3}\r\n');
      const bad = await c.until(/^a (OK|NO|BAD)/m);
      assert.match(bad, /^a BAD Expected DONE/m, bad);
      c.send('c NOOP\r\n');
      const next = await c.until(/^c (OK|NO|BAD)/m);
      assert.doesNotMatch(bad + next, /^\+ Ready/m, 'no continuation for a line read in IDLE');
      assert.match(next, /^c OK/m, next);

      // a non-synchronising literal: its bytes are no literal, but the commands they are
      c.send('d IDLE\r\ne NOOP {8+}\r\nf NOOP\r\ng NOOP\r\n');
      const out = await c.until(/^g (OK|NO|BAD)/m);
      assert.match(out, /^d BAD Expected DONE/m, out);
      assert.match(out, /^f OK/m, out);
      assert.match(out, /^g OK/m, out);
      assert.doesNotMatch(out, /^e /m, out);
    } finally {
      c.close();
    }
  });
});
