// What the store cannot read (a disk answering EIO, a file the service may not read) is
// not missing: a subscription list that cannot be read is no empty list to show or to
// write over, and a folder that cannot be read is not left out of LIST, where a client
// takes it for deleted and the webmail answers 404 for it; nor does it hide the others.
// A NOTIFY session told of a change while the store cannot be read hears of it once the
// store can, without another change to wake it; a folder it still cannot read after ten
// tries in a row is given up, with one warning, until its next change.
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { EventKeys } from '@mailyard/contracts';
import { accountDir, folderDir } from '@mailyard/mailstore';
import { waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { NOTIFY_RETRY, type NotifyRetry } from '../src/index.js';
import { capturingLogger, PASSWORD, startRetrieval, type Retrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

const USER = 'subs-fault@example.test';
let p: Platform;
let r: Retrieval;
before(async () => {
  p = await startPlatform({ withDelivery: false });
  r = await startRetrieval(p);
  await addAccount(p.directory, USER);
});
after(async () => {
  await r?.stop();
  await p?.close();
});

/** What the NOTIFY tests of folders' messages watch. */
const STATUS_EVENTS = 'STATUS (personal (MessageNew MessageExpunge))';

function login(): Promise<RawImap> {
  return RawImap.loggedIn(r.ports.imap, USER, PASSWORD);
}

/**
 * A NOTIFY session of a new account `user` on a second instance, whose log the test reads,
 * and `other`, a session of the account on the first: changes are made through it, as
 * another client's or a delivery's. `folders` are created before the watcher's NOTIFY SET
 * `notify`, whose answer is `set`; `notifyRetry`, the second instance's schedule.
 */
async function notifyWatcher(
  t: TestContext,
  user: string,
  notify: string,
  { folders = ['Work'], notifyRetry }: { folders?: string[]; notifyRetry?: NotifyRetry } = {},
) {
  await addAccount(p.directory, user);
  const { logger, lines } = capturingLogger();
  const r2 = await startRetrieval(p, {}, { logger, ...(notifyRetry ? { notifyRetry } : {}) });
  t.after(() => r2.stop());
  const other = await RawImap.loggedIn(r.ports.imap, user, PASSWORD);
  t.after(() => other.socket.destroy());
  for (const f of folders) assert.match(await other.cmd('c', `CREATE ${f}`), /^c OK/m);
  const watcher = await RawImap.loggedIn(r2.ports.imap, user, PASSWORD);
  t.after(() => watcher.socket.destroy());
  const set = await watcher.cmd('n', `NOTIFY SET ${notify}`);
  assert.match(set, /^n OK/m);
  return { lines, other, watcher, set };
}

/** Tells the instances that `folder` of `user` has new messages, as a delivery does. */
function messagesChanged(user: string, folder: string): Promise<void> {
  return r.rt.bus.publishEvent(EventKeys.mailboxChanged, {
    v: 1,
    account: user,
    folder,
    queueId: null,
    at: new Date().toISOString(),
    kind: 'messages',
  });
}

/** Appends a message to INBOX through `c`: a change of a folder that reads. */
async function appendToInbox(c: RawImap): Promise<void> {
  const mail = 'Subject: x\r\n\r\nlater\r\n';
  c.send(`a APPEND INBOX {${mail.length}}\r\n`);
  await c.until(/^\+/m);
  c.send(`${mail}\r\n`);
  assert.match(await c.until(/^a (OK|NO|BAD)/m), /^a OK/m);
}

/** Runs `fn` while `path` is a symlink to `target`, what was there kept aside and put back after. */
async function whileBroken(path: string, target: string, fn: () => Promise<void>): Promise<void> {
  renameSync(path, `${path}.kept`);
  symlinkSync(target, path);
  try {
    await fn();
  } finally {
    rmSync(path);
    renameSync(`${path}.kept`, path);
  }
}

/**
 * Runs `fn` while `user`'s Work cannot be read, after a message was delivered to it
 * meanwhile (to new/, which reads) with the delivery's event. Its cur/ is a symlink loop:
 * every look at it fails (ELOOP), as on a failing disk (EIO), which reading again may mend.
 */
async function whileWorkUnreadable(user: string, fn: () => Promise<void>): Promise<void> {
  const work = folderDir(p.maildir, user, 'Work');
  const cur = join(work, 'cur');
  await whileBroken(cur, cur, async () => {
    writeFileSync(
      join(work, 'new', '1736157600.M1P1.test'),
      'From: a@remote.example\r\nSubject: meanwhile\r\n\r\nhello\r\n',
    );
    await messagesChanged(user, 'Work');
    await fn();
  });
}

test(
  'a subscription list that cannot be read is neither shown empty nor replaced',
  { timeout: 30_000 },
  async () => {
    let c = await login();
    assert.match(await c.cmd('c', 'CREATE Work'), /^c OK/m);
    assert.match(await c.cmd('s', 'SUBSCRIBE Work'), /^s OK/m);
    c.socket.destroy();
    const file = join(accountDir(p.maildir, USER), 'subscriptions');
    // every read of the list fails with EIO, as on a failing disk: the kernel answers a
    // read of /proc/self/mem at offset 0 so
    await whileBroken(file, '/proc/self/mem', async () => {
      c = await login();
      assert.ok(lstatSync(file).isSymbolicLink(), 'the login wrote no list over it');
      assert.match(await c.cmd('a', 'LSUB "" "*"'), /^a NO /m);
      // a LIST that shows no subscriptions does not need them
      assert.match(await c.cmd('b', 'LIST "" "*"'), /^\* LIST \([^)]*\) "\/" "Work"\r\n[^]*^b OK/m);
      assert.match(await c.cmd('d', 'SUBSCRIBE INBOX'), /^d NO /m);
      assert.ok(lstatSync(file).isSymbolicLink(), 'SUBSCRIBE wrote no list over it');
      // a RENAME, whose subscriptions follow it, fails before it moves anything
      assert.match(await c.cmd('f', 'RENAME Work Job'), /^f NO /m);
      assert.match(await c.cmd('g', 'LIST "" "*"'), /"Work"\r\n(?![^]*"Job")[^]*^g OK/m);
      c.socket.destroy();
    });
    assert.match(readFileSync(file, 'utf8'), /^Work$/m);
    c = await login();
    assert.match(await c.cmd('e', 'LSUB "" "*"'), /^\* LSUB \(\) "\/" "Work"\r\n[^]*^e OK/m);
    c.socket.destroy();
  },
);

test(
  'a folder that cannot be read stays in LIST, and only opening it fails',
  { timeout: 30_000 },
  async () => {
    let c = await login();
    assert.match(await c.cmd('c', 'CREATE Projects'), /^c OK/m);
    c.socket.destroy();
    const cur = join(folderDir(p.maildir, USER, 'Projects'), 'cur');
    // a symlink loop: every look at cur/ fails (ELOOP), as on a failing disk (EIO)
    await whileBroken(cur, cur, async () => {
      c = await login();
      // listed, as it is there; the others with it; only opening it fails
      const listed = await c.cmd('a', 'LIST "" "*"');
      assert.match(listed, /^\* LIST \([^)]*\) "\/" "Projects"\r\n[^]*^a OK/m);
      assert.match(listed, /^\* LIST \([^)]*\) "\/" "INBOX"\r\n/m);
      assert.match(await c.cmd('b', 'SELECT Projects'), /^b NO /m);
      c.socket.destroy();
    });
    c = await login();
    assert.match(await c.cmd('e', 'LIST "" "*"'), /^\* LIST \([^)]*\) "\/" "Projects"\r\n[^]*^e OK/m);
    c.socket.destroy();
  },
);

test(
  'a folder NOTIFY could not list is told once the store reads again, with no other change',
  { timeout: 120_000 },
  async (t) => {
    const user = 'notify-retry@example.test';
    const { lines, other, watcher } = await notifyWatcher(t, user, '(personal (MailboxName))', {
      folders: [],
    });
    const file = join(accountDir(p.maildir, user), 'subscriptions');
    await whileBroken(file, '/proc/self/mem', async () => {
      assert.match(await other.cmd('c', 'CREATE Work'), /^c OK/m);
      // the watcher's session was told and could not read the subscriptions
      await waitFor(() => lines.some((l) => l.msg === 'NOTIFY update failed'), {
        what: 'the failed NOTIFY update',
        timeoutMs: 60_000,
      });
    });
    // no other change, no IDLE: the session tries again on its own
    const told = await watcher.until(/^\* LIST [^\r\n]*Work/m, 60_000);
    assert.match(told, /^\* LIST \(\) "\/" "?Work"?\r$/m);
  },
);

test(
  'new mail in a folder NOTIFY could not read is told once the store reads again, with no other change',
  { timeout: 120_000 },
  async (t) => {
    const user = 'notify-status-retry@example.test';
    const { lines, other, watcher, set } = await notifyWatcher(t, user, STATUS_EVENTS);
    assert.match(set, /^\* STATUS "?Work"? \(MESSAGES 0 /m);
    await whileWorkUnreadable(user, async () => {
      // then a change of a folder that reads: its STATUS comes after the session tried Work
      await appendToInbox(other);
      await watcher.until(/^\* STATUS "?INBOX"? \(MESSAGES 1 /m, 60_000);
    });
    // no other change, no IDLE: the session reads Work again on its own
    const told = await watcher.until(/^\* STATUS "?Work"?/m, 60_000);
    assert.match(told, /^\* STATUS "?Work"? \(MESSAGES 1 UIDNEXT 2 UNSEEN 1\)\r$/m);
    assert.ok(
      lines.some((l) => l.msg === 'NOTIFY update failed'),
      'Work was read while it could not be',
    );
  },
);

test(
  'a folder NOTIFY can never read is given up, not tried every 30 s for the whole session',
  { timeout: 120_000 },
  async (t) => {
    const user = 'notify-status-never@example.test';
    const { lines, other, watcher } = await notifyWatcher(t, user, STATUS_EVENTS);
    const work = folderDir(p.maildir, user, 'Work');
    // new/ a link to a name too long for the file system: every look at it fails with
    // ENAMETOOLONG, which no retry mends (as EACCES)
    await whileBroken(join(work, 'new'), 'x'.repeat(300), async () => {
      writeFileSync(
        join(work, 'cur', '1736157600.M2P1.test:2,'),
        'From: a@remote.example\r\nSubject: never\r\n\r\nhello\r\n',
      );
      await messagesChanged(user, 'Work');
      await waitFor(() => lines.some((l) => l.msg === 'NOTIFY gave up telling a folder it cannot read'), {
        what: 'NOTIFY giving up on Work',
        timeoutMs: 60_000,
      });
      // the session goes on, and tells the other folders' changes
      await appendToInbox(other);
      await watcher.until(/^\* STATUS "?INBOX"? \(MESSAGES 1 /m, 60_000);
    });
    assert.ok(
      !lines.some((l) => l.msg === 'NOTIFY update failed'),
      'no update failed, to be tried again every 30 s',
    );
    // a later change of Work, once it reads, is told
    await messagesChanged(user, 'Work');
    assert.match(
      await watcher.until(/^\* STATUS "?Work"?/m, 60_000),
      /^\* STATUS "?Work"? \(MESSAGES 1 UIDNEXT 2 UNSEEN 1\)\r$/m,
    );
  },
);

test(
  'a folder NOTIFY cannot read ten times in a row is given up once, and its next change tried afresh',
  { timeout: 120_000 },
  async (t) => {
    const user = 'notify-status-tries@example.test';
    // the production schedule spends minutes on the ten tries: here they follow at once
    const { lines, other, watcher } = await notifyWatcher(t, user, STATUS_EVENTS, {
      notifyRetry: { ...NOTIFY_RETRY, firstMs: 10, maxMs: 40 },
    });
    const failed = () => lines.filter((l) => l.msg === 'NOTIFY update failed').length;
    const gaveUp = () => lines.filter((l) => l.msg === 'NOTIFY gave up telling a folder it cannot read');
    await whileWorkUnreadable(user, async () => {
      await waitFor(() => gaveUp().length > 0, { what: 'NOTIFY giving up on Work', timeoutMs: 60_000 });
      // nine collections failed and were tried again; the tenth gave up, with one warning
      assert.equal(failed(), 9);
      assert.equal(gaveUp()[0]!.fields.tries, 10);
      // and Work is tried no more: another folder's change is told, and nothing else
      await appendToInbox(other);
      await watcher.until(/^\* STATUS "?INBOX"? \(MESSAGES 1 /m, 60_000);
      assert.equal(failed(), 9, 'Work not tried again');
      assert.equal(gaveUp().length, 1, 'one warning');
      // a later change of Work gets ten tries of its own
      await messagesChanged(user, 'Work');
      await waitFor(() => gaveUp().length > 1, { what: 'NOTIFY giving up on Work again', timeoutMs: 60_000 });
      assert.equal(failed(), 18);
      assert.equal(gaveUp()[1]!.fields.tries, 10);
    });
    // and once Work reads, its next change is told
    await messagesChanged(user, 'Work');
    assert.match(
      await watcher.until(/^\* STATUS "?Work"?/m, 60_000),
      /^\* STATUS "?Work"? \(MESSAGES 1 UIDNEXT 2 UNSEEN 1\)\r$/m,
    );
    assert.equal(gaveUp().length, 2, 'no more warnings');
  },
);

test(
  'a delete NOTIFY waits on while the store cannot be read is tried on the retry schedule, not in a loop',
  { timeout: 120_000 },
  async (t) => {
    const user = 'notify-wait-retry@example.test';
    const { lines, other, watcher } = await notifyWatcher(t, user, '(personal (MailboxName))', {
      folders: ['Old'],
      notifyRetry: { ...NOTIFY_RETRY, firstMs: 1000, maxMs: 1000 },
    });
    // a folder the watcher was never told of (as one made again at a login): a delete then
    // waits a moment (2 s) for a rename's own event
    for (const d of ['cur', 'new', 'tmp'])
      mkdirSync(join(folderDir(p.maildir, user, 'Ghost'), d), { recursive: true });
    assert.match(await other.cmd('d', 'DELETE Old'), /^d OK/m);
    assert.match(await other.cmd('c', 'CREATE Seen'), /^c OK/m);
    // told of the folder made after it: the delete was collected, and waits
    await watcher.until(/^\* LIST [^\r\n]*Seen/m, 30_000);
    const failures = () => lines.filter((l) => l.msg === 'NOTIFY update failed');
    const file = join(accountDir(p.maildir, user), 'subscriptions');
    await whileBroken(file, '/proc/self/mem', async () => {
      // at the wait's end the collection fails; it is tried again once a second, not at
      // once: a loop would fail hundreds of times between two looks
      await waitFor(() => failures().length >= 4, {
        what: 'four failed NOTIFY updates',
        timeoutMs: 60_000,
        intervalMs: 100,
      });
      assert.ok(failures().length <= 5, `${failures().length} failed updates`);
    });
    // and once the store reads again, the delete is told
    await watcher.until(/^\* LIST \(\\NonExistent\) "\/" "?Old"?/m, 60_000);
  },
);
