// NOTIFY (RFC 5465) end to end, with two workers (RETRIEVAL_WORKERS=2: node:cluster hands
// out connections in turn, so the watching session and the one making changes run in
// different processes and the events cross between them over the broker). The watcher
// sends no command while it waits: notifications leave between commands (§3), and in IDLE.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import type { ImapFlow } from 'imapflow';
import { startProcessTestbed, type ProcessTestbed } from '../../../test/processes.js';
import { plainImapFlow, serverTcpRow, startTwoWorkers } from './loopback.js';
import { RawImap } from './raw-imap.js';

const PASSWORD = 'correct horse battery staple';
const USER = 'watcher@notify.test';
const PYUSER = 'py@notify.test';
const RUSER = 'renamer@notify.test';
const OUSER = 'slow@notify.test';
const GUSER = 'ghost@notify.test';
let bed: ProcessTestbed;
let imap: number;

before(async () => {
  bed = await startProcessTestbed('notify.test', [USER, PYUSER, RUSER, OUSER, GUSER]);
  ({ imap } = await startTwoWorkers(bed));
});
after(() => bed?.close());

async function watcher(user: string): Promise<RawImap> {
  const c = await RawImap.connect(imap);
  await c.until(/^\* OK/m);
  assert.match(await c.cmd('l', `LOGIN ${user} "${PASSWORD}"`, 30_000), /^l OK/m);
  return c;
}

function changer(user: string): ImapFlow {
  return plainImapFlow(imap, user);
}

/**
 * Waits until the kernel's send queue of the server's end of `c`'s connection satisfies
 * `ok` (tx_queue of the socket from the IMAP port to `c`'s port).
 */
async function serverSendQueue(c: RawImap, ok: (bytes: number) => boolean): Promise<void> {
  const deadline = Date.now() + 60_000;
  let queued = -1;
  while (Date.now() < deadline) {
    const row = await serverTcpRow(imap, c.socket.localPort!);
    queued = row ? parseInt(row[4]!.split(':')[0]!, 16) : -1;
    if (ok(queued)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the server's send queue stayed at ${queued} bytes`);
}

const msg = (subject: string) => `Subject: ${subject}\r\n\r\nbody\r\n`;

test(
  'another session’s changes reach a NOTIFY session on the other worker',
  { timeout: 180_000 },
  async (t) => {
    const w = await watcher(USER);
    // the next connection lands on the other worker
    const other = changer(USER);
    await other.connect();
    try {
      assert.match(await w.cmd('cap', 'CAPABILITY'), /\bNOTIFY\b/);
      assert.match(await w.cmd('c', 'CREATE Work'), /^c OK/m);
      assert.match(await w.cmd('s', 'SELECT INBOX'), /^s OK/m);
      const set = await w.cmd(
        'n',
        'NOTIFY SET STATUS (selected (MessageNew (uid flags) MessageExpunge FlagChange)) ' +
          '(personal (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange))',
      );
      assert.match(
        set,
        /^\* STATUS "Work" \(MESSAGES 0 UIDNEXT 1 UIDVALIDITY \d+ UNSEEN 0 HIGHESTMODSEQ \d+\)/m,
      );
      assert.doesNotMatch(set, /^\* STATUS "INBOX"/m, 'the selected mailbox has no STATUS');
      assert.match(set, /^n OK/m);

      // a message filed into a folder that is not selected: STATUS, unasked
      const sent = Date.now();
      await other.append('Work', msg('to work'));
      assert.match(
        await w.until(/^\* STATUS "Work" /m, 30_000),
        /\(MESSAGES 1 UIDNEXT 2 UNSEEN 1 HIGHESTMODSEQ \d+\)/,
      );
      t.diagnostic(`STATUS on the other worker ${Date.now() - sent} ms after APPEND was sent`);
      // folders and subscriptions: LIST
      await other.mailboxCreate('Play');
      await w.until(/^\* LIST \(\) "\/" "Play"\r\n/m, 30_000);
      await other.mailboxRename('Play', 'Games');
      await w.until(/^\* LIST \(\) "\/" "Games" \("OLDNAME" \("Play"\)\)\r\n/m, 30_000);
      // imapflow subscribes what it creates, and RENAME took the subscription along
      await other.mailboxUnsubscribe('Games');
      await w.until(/^\* LIST \(\) "\/" "Games"\r\n/m, 30_000);
      await other.mailboxSubscribe('Games');
      await w.until(/^\* LIST \(\\Subscribed\) "\/" "Games"\r\n/m, 30_000);
      await other.mailboxDelete('Games');
      await w.until(/^\* LIST \(\\NonExistent\) "\/" "Games"\r\n/m, 30_000);
      // a flag changed elsewhere: the unseen count
      const lock = await other.getMailboxLock('Work');
      try {
        await other.messageFlagsAdd('1', ['\\Seen']);
      } finally {
        lock.release();
      }
      assert.match(await w.until(/^\* STATUS "Work" /m, 30_000), /\(UNSEEN 0 HIGHESTMODSEQ \d+\)/);
      // the selected mailbox: EXISTS, then the FETCH MessageNew asked for
      await other.append('INBOX', msg('to the inbox'));
      const fresh = await w.until(/^\* 1 FETCH /m, 30_000);
      assert.match(fresh, /^\* 1 EXISTS\r\n/m);
      // an IMAP4rev1 session: the new message is \Recent to it; CONDSTORE is on (FlagChange)
      assert.match(fresh, /^\* 1 FETCH \(UID 1 FLAGS \(\\Recent\) MODSEQ \(\d+\)\)/m);
      // in IDLE as well
      w.send('i IDLE\r\n');
      await w.until(/^\+ /m);
      await other.append('Work', msg('while idling'));
      assert.match(await w.until(/^\* STATUS "Work" /m, 30_000), /MESSAGES 2 UIDNEXT 3 UNSEEN 1/);
      w.send('DONE\r\n');
      await w.until(/^i OK/m);
      // NOTIFY NONE: nothing more (the NOOP after a change elsewhere brings no STATUS)
      assert.match(await w.cmd('x', 'NOTIFY NONE'), /^x OK/m);
      await other.append('Work', msg('unheard'));
      assert.doesNotMatch(await w.cmd('y', 'NOOP'), /STATUS/);
    } finally {
      w.close();
      other.close();
    }
  },
);

test('RENAME INBOX is told as the folder it makes', { timeout: 60_000 }, async () => {
  const w = await watcher(RUSER);
  const other = changer(RUSER);
  await other.connect();
  try {
    assert.match(await w.cmd('n', 'NOTIFY SET (personal (MailboxName))'), /^n OK/m);
    // RENAME INBOX moves its messages into a new folder and leaves INBOX (RFC 9051 §6.3.6)
    await other.append('INBOX', msg('old mail'));
    await other.mailboxRename('INBOX', 'Old');
    await w.until(/^\* LIST \(\) "\/" "Old"\r\n/m, 30_000);
  } finally {
    w.close();
    other.close();
  }
});

test(
  'a delete is told on its own while a folder the client was not told of is there',
  { timeout: 90_000 },
  async (t) => {
    const w = await watcher(GUSER);
    const other = changer(GUSER);
    await other.connect();
    try {
      await other.mailboxCreate('Old');
      await other.mailboxCreate('Play');
      assert.match(await w.cmd('n', 'NOTIFY SET (personal (MailboxName))'), /^n OK/m);
      await other.mailboxDelete('Trash');
      await w.until(/^\* LIST \(\\NonExistent\) "\/" "Trash"\r\n/m, 30_000);
      // the next login makes the special-use folder again, and tells nobody: the watcher
      // has a folder in the store no event named
      const login = changer(GUSER);
      await login.connect();
      await login.logout();

      // a DELETE, with no other event, command or IDLE to follow it: a RENAME's event
      // (which the delete might have been) is waited for a while, then the delete is told
      const sent = Date.now();
      await other.mailboxDelete('Old');
      await w.until(/^\* LIST \(\\NonExistent\) "\/" "Old"\r\n/m, 30_000);
      t.diagnostic(`DELETE told ${Date.now() - sent} ms after it was sent`);

      // a RENAME meanwhile is still told as one, not as a delete and a create
      await other.mailboxRename('Play', 'Games');
      await w.until(/^\* LIST \(\) "\/" "Games" \("OLDNAME" \("Play"\)\)\r\n/m, 30_000);
      const rest = await w.cmd('x', 'NOOP');
      assert.doesNotMatch(rest, /^\* LIST .*"(Play|Games)"/m);
      // nor is the folder the login made told by the collections since
      assert.doesNotMatch(rest, /"Trash"/);
    } finally {
      w.close();
      other.close();
    }
  },
);

test('selected-delayed holds EXPUNGE back until a command allows it', { timeout: 60_000 }, async () => {
  const w = await watcher(PYUSER);
  const other = changer(PYUSER);
  await other.connect();
  try {
    await other.append('INBOX', msg('first'));
    await other.append('INBOX', msg('second'));
    assert.match(await w.cmd('s', 'SELECT INBOX'), /^\* 2 EXISTS/m);
    assert.match(
      await w.cmd('n', 'NOTIFY SET (selected-delayed (MessageNew (UID) MessageExpunge))'),
      /^n OK/m,
    );
    const lock = await other.getMailboxLock('INBOX');
    try {
      await other.messageDelete('1');
    } finally {
      lock.release();
    }
    // a new message is told at once, in the numbers the client holds: the expunged one
    // still counts until its EXPUNGE
    await other.append('INBOX', msg('third'));
    const told = await w.until(/^\* 3 FETCH \(UID \d+\)/m, 30_000);
    assert.match(told, /^\* 3 EXISTS\r\n/m);
    assert.doesNotMatch(told, /EXPUNGE/);
    assert.match(await w.cmd('x', 'NOOP'), /^\* 1 EXPUNGE\r\n/m);
  } finally {
    w.close();
    other.close();
  }
});

test(
  'a client that falls a thousand mailboxes behind is told NOTIFICATIONOVERFLOW; NOTIFY ends',
  { timeout: 180_000 },
  async () => {
    const w = await watcher(OUSER);
    const other = changer(OUSER);
    await other.connect();
    try {
      assert.match(await w.cmd('c', 'CREATE Work'), /^c OK/m);
      assert.match(await w.cmd('s', 'SELECT INBOX'), /^s OK/m);
      assert.match(
        await w.cmd(
          'n',
          'NOTIFY SET (selected (MessageNew (UID BODY.PEEK[]) MessageExpunge)) (personal (MailboxName))',
        ),
        /^n OK/m,
      );
      // the watcher stops reading: the bodies MessageNew asks for fill the socket's buffers,
      // and the server waits for the client before it tells anything more
      w.socket.pause();
      const line = `${'x'.repeat(76)}\r\n`;
      const big = `Subject: big\r\n\r\n${line.repeat(13_000)}`;
      // 10 MB of bodies: more than the kernel holds for a client that does not read (the
      // server's send buffer, 4 MB at most, and the client's receive buffer, small while it
      // has read little) and the 1 MB the server queues itself
      for (let i = 0; i < 10; i++) await other.append('INBOX', big);
      // the server is sending them: from here on it waits for the client
      await serverSendQueue(w, (queued) => queued >= 1 << 20);
      // meanwhile changes pile up in more mailboxes than the server keeps for one client
      // (1000; a round that had begun before it blocked may still tell a few)
      for (let i = 0; i < 1100; i++) await other.mailboxCreate(`pile${i}`);
      w.socket.resume();
      // told once, after the responses already under way (RFC 5465 §5.8)
      await w.until(/^\* OK \[NOTIFICATIONOVERFLOW\]/m, 60_000);
      assert.match(await w.cmd('a', 'NOOP', 60_000), /^a OK/m);
      // NOTIFY is off: a new folder elsewhere brings nothing unasked
      await other.mailboxCreate('unheard');
      assert.doesNotMatch(await w.cmd('b', 'NOOP', 30_000), /LIST/);
    } finally {
      w.close();
      other.close();
    }
  },
);

test(
  'NOTIFY refuses what it cannot keep: too many mailboxes, unsupported events',
  { timeout: 30_000 },
  async () => {
    const w = await watcher(USER);
    try {
      const names = Array.from({ length: 101 }, (_, i) => `f${i}`).join(' ');
      assert.match(
        await w.cmd('a', `NOTIFY SET (mailboxes (${names}) (MessageNew MessageExpunge))`),
        /^a NO \[LIMIT\] NOTIFY names at most 100 mailboxes/m,
      );
      assert.match(
        await w.cmd('b', 'NOTIFY SET (personal (MailboxMetadataChange))'),
        /^b NO \[BADEVENT \(MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange\)\]/m,
      );
      assert.match(await w.cmd('c', 'NOTIFY SET (selected (MessageNew))'), /^c BAD /m);
    } finally {
      w.close();
    }
  },
);

test('Python imaplib hears of mail filed elsewhere after NOTIFY SET', { timeout: 60_000 }, async () => {
  const { stdout } = await promisify(execFile)(
    'python3',
    [
      '-c',
      `
import imaplib, sys, json
port, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
imaplib.Commands['NOTIFY'] = ('AUTH', 'SELECTED')
m = imaplib.IMAP4('127.0.0.1', port); m.login(user, pw)
o = imaplib.IMAP4('127.0.0.1', port); o.login(user, pw)
o.create('Lists')
m.select('INBOX')
res = {'set': m._simple_command('NOTIFY', 'SET', 'STATUS', '(subtree Lists (MessageNew MessageExpunge))')[0]}
res['initial'] = [d.decode() for d in m.response('STATUS')[1] if d]
o.append('Lists', None, None, b'Subject: hi\\r\\n\\r\\nbody\\r\\n')
o.logout()
# read until the unsolicited STATUS arrives (another process may take a moment)
m.sock.settimeout(15)
line = m.readline().decode()
res['event'] = line.strip()
m.logout()
print(json.dumps(res))
`,
      String(imap),
      PYUSER,
      PASSWORD,
    ],
    { timeout: 30_000 },
  );
  const res = JSON.parse(stdout) as { set: string; initial: string[]; event: string };
  assert.equal(res.set, 'OK');
  assert.deepEqual(
    res.initial.map((l) => l.replace(/UIDVALIDITY \d+/, 'UIDVALIDITY v')),
    ['"Lists" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY v UNSEEN 0)'],
  );
  assert.equal(res.event, '* STATUS "Lists" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)');
});
