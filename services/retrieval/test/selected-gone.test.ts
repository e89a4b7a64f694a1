// The selected folder deleted or renamed under a session (by another client, the webmail,
// or the session itself): the session ends with a BYE, as Dovecot ends it, so that the
// client logs in again, rather than answering every later command with an error.
// Run against Dovecot too, where it is installed, for what both must do.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { dovecotInstalled } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { startDovecotBeside } from './dovecot-beside.js';
import { PASSWORD, startRetrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

const CASES = [
  'deleted',
  'renamed',
  'idle',
  'idle-renamed',
  'own-rename',
  'parent-renamed',
  'recreated',
  'recreated-store',
];
const userOf = (c: string) => `gone-${c}@example.test`;

let close: () => Promise<void> = async () => undefined;
let p: Platform;
/** Mailyard first; Dovecot after it where installed. */
const servers: { name: string; port: number }[] = [];

before(async () => {
  if (dovecotInstalled()) {
    const both = await startDovecotBeside({
      name: 'selected-gone',
      users: CASES.map(userOf),
      extraConfig: 'namespace inbox {\n  inbox = yes\n  separator = /\n}\n',
    });
    close = () => both.close();
    p = both.p;
    servers.push({ name: 'mailyard', port: both.r.ports.imap }, { name: 'dovecot', port: both.dovecot.port });
  } else {
    p = await startPlatform({ withDelivery: false });
    const r = await startRetrieval(p);
    close = async () => {
      await r.stop();
      await p.close();
    };
    servers.push({ name: 'mailyard', port: r.ports.imap });
  }
  for (const c of CASES) await addAccount(p.directory, userOf(c));
});
after(() => close());

async function login(port: number, user: string): Promise<RawImap> {
  const c = await RawImap.connect(port);
  await c.until(/^\* OK/m);
  assert.match(await c.cmd('l', `LOGIN ${user} "${PASSWORD}"`), /^l OK/m);
  return c;
}

/** Two sessions of `user`, the first with `folder` (one message in it) selected. */
async function selectedIn(port: number, user: string, folder: string): Promise<[RawImap, RawImap]> {
  const a = await login(port, user);
  const b = await login(port, user);
  assert.match(await b.cmd('c', `CREATE ${folder}`), /^c OK/m);
  assert.match(await b.cmd('p', `APPEND ${folder} {5+}\r\nx: y\r\n`), /^p OK/m);
  assert.match(await a.cmd('s', `SELECT ${folder}`), /^\* 1 EXISTS/m);
  return [a, b];
}

/**
 * The session ends: a BYE, then the connection closes; nothing refused meanwhile, nor
 * anything `nor` matches.
 * (Dovecot's words vary with the command: "IMAP session state is inconsistent, please
 * relogin.", "FETCH failed: Mailbox was deleted under us".)
 */
async function ends(c: RawImap, nor?: RegExp): Promise<void> {
  const out = await c.until(/^\* BYE /m);
  assert.doesNotMatch(out, /SERVERBUG|Internal error/);
  if (nor) assert.doesNotMatch(out, nor);
  await c.waitClosed();
}

/** A new session of the user works as if nothing happened. */
async function loginAgain(port: number, user: string): Promise<void> {
  const c = await login(port, user);
  assert.match(await c.cmd('s', 'SELECT INBOX'), /^s OK/m);
  assert.match(await c.cmd('n', 'NOOP'), /^n OK/m);
  c.close();
}

void describe('the selected folder gone', { timeout: 120_000 }, () => {
  // another session's change, then the command that finds it out
  const changes = [
    { user: 'deleted', what: 'deleted', folder: 'Gone', change: 'DELETE Gone', next: 'NOOP' },
    { user: 'renamed', what: 'renamed', folder: 'Old', change: 'RENAME Old New', next: 'FETCH 1 FLAGS' },
    {
      user: 'parent-renamed',
      what: 'a level above it renamed',
      folder: 'Top/Sub',
      change: 'RENAME Top Moved',
      next: 'NOOP',
    },
  ];
  for (const c of changes)
    void it(`${c.what} by another session: the next command ends the session`, async () => {
      for (const { name, port } of servers) {
        const user = userOf(c.user);
        const [a, b] = await selectedIn(port, user, c.folder);
        assert.match(await b.cmd('d', c.change), /^d OK/m, name);
        a.send(`n ${c.next}\r\n`);
        await ends(a);
        await loginAgain(port, user);
        b.close();
      }
    });

  void it('an idling session is told at once', async () => {
    for (const { name, port } of servers) {
      const user = userOf('idle');
      const [a, b] = await selectedIn(port, user, 'Watched');
      a.send('i IDLE\r\n');
      await a.until(/^\+ /m);
      assert.match(await b.cmd('d', 'DELETE Watched'), /^d OK/m, name);
      // no DONE, no command: the BYE comes by itself
      await ends(a);
      b.close();
    }
  });

  // Dovecot tells an idling session of this only at its next command
  void it('an idling session is told at once of a RENAME of a level above it', async () => {
    const user = userOf('idle-renamed');
    const [a, b] = await selectedIn(servers[0]!.port, user, 'Up/Down');
    a.send('i IDLE\r\n');
    await a.until(/^\+ /m);
    assert.match(await b.cmd('r', 'RENAME Up Over'), /^r OK/m);
    await ends(a);
    b.close();
  });

  /**
   * `a` has `folder` selected with one message, UID 1; `b` deletes it, creates it again
   * and appends two messages, UIDs 1 and 2 of another UIDVALIDITY.
   */
  async function recreated(user: string, folder: string): Promise<[RawImap, RawImap]> {
    const [a, b] = await selectedIn(servers[0]!.port, user, folder);
    assert.match(await b.cmd('d', `DELETE ${folder}`), /^d OK/m);
    assert.match(await b.cmd('c', `CREATE ${folder}`), /^c OK/m);
    for (const t of ['p1', 'p2'])
      assert.match(await b.cmd(t, `APPEND ${folder} {5+}\r\nz: w\r\n`), /^p\d OK/m);
    return [a, b];
  }

  // Dovecot answers "* NO Internal error occurred" here (a STORE: "NO [SERVERBUG]"), and
  // the session stays selected
  void it('deleted and created again by another session: the next command ends the session', async () => {
    const [a, b] = await recreated(userOf('recreated'), 'Again');
    a.send('n NOOP\r\n');
    // nothing of the new folder told as if under the UIDs of the old one
    await ends(a, /EXISTS|FETCH/);
    b.close();
  });

  void it('deleted and created again: a STORE by the old UIDs changes nothing, and the session ends', async () => {
    const [a, b] = await recreated(userOf('recreated-store'), 'Again');
    a.send('t UID STORE 1 +FLAGS.SILENT (\\Deleted)\r\n');
    await ends(a, /^t /m);
    // the new folder's UID 1, which that client never saw, is as it was appended
    assert.match(await b.cmd('s', 'SELECT Again'), /^\* 2 EXISTS/m);
    const flags = await b.cmd('f', 'UID FETCH 1:* FLAGS');
    assert.match(flags, /^\* 1 FETCH \(UID 1 FLAGS /m);
    assert.doesNotMatch(flags, /Deleted/);
    b.close();
  });

  void it('renamed by the session itself: the RENAME is answered OK, then the session ends', async () => {
    for (const { name, port } of servers) {
      const user = userOf('own-rename');
      const [a, b] = await selectedIn(port, user, 'Mine');
      b.close();
      // the folder was renamed: it must not be answered as a failure
      a.send('r RENAME Mine Ours\r\n');
      assert.match(await a.until(/^r (OK|NO|BAD)/m), /^r OK/m, name);
      // Dovecot closes at the next command; Mailyard at once (a NOOP after it changes nothing)
      a.send('n NOOP\r\n');
      await ends(a);
      const c = await login(port, user);
      assert.match(await c.cmd('s', 'SELECT Ours'), /^\* 1 EXISTS/m);
      c.close();
    }
  });
});
