import assert from 'node:assert/strict';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { tempDir, waitFor } from '@mailyard/testkit';

// A disk whose syncs take long cannot be had on demand: while `held` is set, fdatasync (the
// sync of the UID list) waits for the test to let it go. Writes, renames and every other
// sync are the real ones. Set before the store is loaded, which takes fdatasync at load.
// While `failing` is set, the sync of a file it names fails as a failing disk's would.
let held: Promise<void> | null = null;
let failing: string | null = null;
const realFdatasync = fs.fdatasync;
fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
  if (failing && fs.readlinkSync(`/proc/self/fd/${fd}`) === failing) {
    process.nextTick(cb, Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
    return;
  }
  const h = held;
  if (!h) return realFdatasync(fd, cb);
  void h.then(() => realFdatasync(fd, cb));
}) as typeof fs.fdatasync;
// While `heldDir` is set, so does the fsync of the directory it names.
// `running` counts the other fsyncs under way.
let heldDir: { dir: string; until: Promise<void> } | null = null;
let running = 0;
const realFsync = fs.fsync;
fs.fsync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
  const h = heldDir;
  if (h && fs.readlinkSync(`/proc/self/fd/${fd}`) === h.dir) {
    void h.until.then(() => realFsync(fd, cb));
    return;
  }
  running++;
  realFsync(fd, (err) => {
    running--;
    cb(err);
  });
}) as typeof fs.fsync;
syncBuiltinESMExports();
const { MailFolder } = await import('../src/index.js');

const tmp = tempDir('mailstore-sync-');
after(() => tmp.cleanup());
/** Without links: the paths the kernel gives for the open files (see above). */
const root = fs.realpathSync(tmp.path);
const msg = (i: number) => Buffer.from(`Subject: m${i}\r\n\r\nbody ${i}\r\n`);

/** A folder of its own with messages 1 and 2. */
async function twoMessages(name: string) {
  const dir = join(root, name);
  const date = new Date();
  const a = new MailFolder(dir, name, 'h');
  await a.ensure();
  await a.appendMany([1, 2].map((i) => ({ data: msg(i), flags: [], date })));
  return { dir, date, a };
}

void describe('the UID list synced after the lock', () => {
  void it(
    "an APPEND is answered once its UID is on disk; another process's change does not wait for that",
    { timeout: 20_000 },
    async () => {
      const { dir, date, a } = await twoMessages('INBOX');
      // another process on the same files
      const b = new MailFolder(dir, 'INBOX', 'h');
      assert.equal((await b.snapshot()).messages.length, 2);

      let letGo!: () => void;
      held = new Promise((r) => (letGo = r));
      let answered = false;
      const appending = a.append(msg(3), [], date).then((r) => {
        answered = true;
        return r;
      });
      // the line is written (the other process reads it) while its sync waits
      await waitFor(async () => (await b.snapshot()).messages.length === 3, { what: 'the third message' });
      const stored = await b.store([{ uid: 1, op: 'add', flags: ['\\Seen'] }]);
      assert.deepEqual(
        stored.changed.map((m) => [m.uid, m.flags]),
        [[1, ['\\Seen']]],
        'the other process changed the folder under the lock meanwhile',
      );
      assert.equal(answered, false, 'no answer before the UID list is synced');

      held = null;
      letGo();
      const { uid } = await appending;
      assert.equal(uid, 3);
      const seen = (await a.snapshot()).messages.map((m) => [m.uid, m.flags]);
      assert.deepEqual(seen, [
        [1, ['\\Seen']],
        [2, []],
        [3, []],
      ]);
    },
  );

  void it(
    'an APPEND that rewrote the list whole is answered once the rename is on disk',
    { timeout: 20_000 },
    async () => {
      const { dir, date, a } = await twoMessages('Rewritten');
      const first = (await a.snapshot()).messages[0]!;
      // removed behind the store's back: the next change drops its line, and so writes the
      // list whole and renames it into place
      fs.unlinkSync(join(dir, first.rel));
      const before = fs.statSync(join(dir, 'dovecot-uidlist')).ino;

      let letGo!: () => void;
      heldDir = { dir, until: new Promise((r) => (letGo = r)) };
      let answered = false;
      const appending = a.append(msg(3), [], date).then((r) => {
        answered = true;
        return r;
      });
      await waitFor(() => fs.statSync(join(dir, 'dovecot-uidlist')).ino !== before, {
        what: 'the list renamed',
      });
      // the message's and cur/'s syncs done, and what waited on them run: the answer still
      // waits for the directory's, which the test holds
      await waitFor(() => running === 0 && fs.readdirSync(join(dir, 'cur')).length === 2, {
        what: 'the other syncs',
      });
      assert.equal(answered, false, "no answer before the directory's sync");
      heldDir = null;
      letGo();
      assert.equal((await appending).uid, 3);
      assert.deepEqual(
        (await a.snapshot()).messages.map((m) => m.uid),
        [2, 3],
      );
    },
  );

  void it('a UID list that cannot be synced leaves the folder unlocked', { timeout: 20_000 }, async () => {
    const { dir, date, a } = await twoMessages('Failing');
    // the next change writes the list whole (see above), through the lock file
    fs.unlinkSync(join(dir, (await a.snapshot()).messages[0]!.rel));
    failing = join(dir, 'dovecot-uidlist.lock');
    await assert.rejects(a.append(msg(3), [], date), /EIO/);
    failing = null;
    assert.equal(fs.existsSync(join(dir, 'dovecot-uidlist.lock')), false, 'the lock is released');
    // the next change takes the lock at once (a lock left behind is waited for 30 s)
    const b = new MailFolder(dir, 'Failing', 'h');
    const stored = await b.store([{ uid: 2, op: 'add', flags: ['\\Seen'] }]);
    assert.deepEqual(
      stored.changed.map((m) => [m.uid, m.flags]),
      [[2, ['\\Seen']]],
    );
  });

  void it(
    'a message whose APPEND failed on a sync, yet stays, counts against the quota',
    { timeout: 20_000 },
    async () => {
      const account = join(root, 'quota-account');
      const dir = join(account, '.Failing');
      fs.mkdirSync(account);
      fs.writeFileSync(join(account, 'maildirsize'), '1000000S\n0 0\n');
      const date = new Date();
      const a = new MailFolder(dir, 'Failing', 'h', account);
      await a.ensure();
      await a.appendMany([1, 2].map((i) => ({ data: msg(i), flags: [], date })));
      fs.unlinkSync(join(dir, (await a.snapshot()).messages[0]!.rel));
      failing = join(dir, 'dovecot-uidlist.lock');
      await assert.rejects(a.append(msg(3), [], date), /EIO/);
      failing = null;
      // the message went into cur/ before the sync failed: the next read numbers it
      const left = (await new MailFolder(dir, 'Failing', 'h', account).snapshot()).messages;
      assert.deepEqual(
        left.map((m) => m.uid),
        [2, 3],
      );
      const lines = fs.readFileSync(join(account, 'maildirsize'), 'utf8').trim().split('\n');
      assert.deepEqual(lines.slice(1), ['0 0', `${msg(1).length * 2} 2`, `${msg(3).length} 1`]);
    },
  );
});
