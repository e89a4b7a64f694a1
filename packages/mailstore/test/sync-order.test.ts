import assert from 'node:assert/strict';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { tempDir, waitFor } from '@mailyard/testkit';

// A disk whose syncs take long cannot be had on demand: while `held` is set, fdatasync (the
// sync of the UID list) waits for the test to let it go. Writes, renames and every other
// sync are the real ones. Set before the store is loaded, which takes fdatasync at load.
let held: Promise<void> | null = null;
const realFdatasync = fs.fdatasync;
fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
  const h = held;
  if (!h) return realFdatasync(fd, cb);
  void h.then(() => realFdatasync(fd, cb));
}) as typeof fs.fdatasync;
syncBuiltinESMExports();
const { MailFolder } = await import('../src/index.js');

const tmp = tempDir('mailstore-sync-');
after(() => tmp.cleanup());
const msg = (i: number) => Buffer.from(`Subject: m${i}\r\n\r\nbody ${i}\r\n`);

void describe('the UID list synced after the lock', () => {
  void it(
    "an APPEND is answered once its UID is on disk; another process's change does not wait for that",
    { timeout: 20_000 },
    async () => {
      const dir = join(tmp.path, 'INBOX');
      const date = new Date();
      const a = new MailFolder(dir, 'INBOX', 'h');
      await a.ensure();
      await a.appendMany([1, 2].map((i) => ({ data: msg(i), flags: [], date })));
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
});
