// The dot-lock when it was broken as stale while held (its holder hung longer than the
// stale age, and another process took the lock): the late holder neither replaces the
// file nor removes the other process's lock.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { syncBuiltinESMExports } from 'node:module';
import { tempDir } from '@mailyard/testkit';

// Two waiters breaking the same stale lock at once cannot be had on demand: while `racing`
// names a lock file, the first stat of it that finds it stale lets "the other waiter" break
// it and take the lock right after, before the caller looks again.
let racing: string | null = null;
const realStatSync = fs.statSync;
(fs as { statSync: unknown }).statSync = (path: fs.PathLike, opts?: fs.StatSyncOptions) => {
  const st = realStatSync(path, opts);
  if (racing && path === racing) {
    racing = null;
    breakAndTake(path.slice(0, -'.lock'.length));
  }
  return st;
};
syncBuiltinESMExports();
const { DotLock } = await import('../src/lock.js');

const tmp = tempDir('mailyard-lock-');
after(() => tmp.cleanup());

/** Breaks the lock on `target` as a waiting process does with a stale one, and takes it. */
function breakAndTake(target: string): void {
  fs.unlinkSync(`${target}.lock`);
  fs.writeFileSync(`${target}.lock`, 'the other process', { flag: 'wx' });
}

void describe('a dot-lock broken as stale while held', () => {
  void it('commit leaves the file as it was and the other lock in place', { timeout: 10_000 }, async () => {
    const target = join(tmp.path, 'list-a');
    fs.writeFileSync(target, 'before\n');
    const lock = await DotLock.acquire(target);
    breakAndTake(target);
    await assert.rejects(lock.commit('after\n'), /broken as stale/);
    assert.equal(fs.readFileSync(target, 'utf8'), 'before\n');
    assert.equal(fs.readFileSync(`${target}.lock`, 'utf8'), 'the other process');
  });

  void it('release leaves the other lock in place', { timeout: 10_000 }, async () => {
    const target = join(tmp.path, 'list-b');
    const lock = await DotLock.acquire(target);
    breakAndTake(target);
    await lock.release();
    assert.equal(fs.readFileSync(`${target}.lock`, 'utf8'), 'the other process');
  });

  void it('a lock still ours is committed and released as before', { timeout: 10_000 }, async () => {
    const target = join(tmp.path, 'list-c');
    const lock = await DotLock.acquire(target);
    await lock.commit('written\n');
    assert.equal(fs.readFileSync(target, 'utf8'), 'written\n');
    assert.equal(fs.existsSync(`${target}.lock`), false);
    const again = await DotLock.acquire(target, { timeoutMs: 1000 });
    await again.release();
    assert.equal(fs.existsSync(`${target}.lock`), false);
  });

  void it(
    'a stale lock another waiter broke and took meanwhile (on the same inode number) is left to it',
    { timeout: 10_000 },
    async () => {
      const target = join(tmp.path, 'list-e');
      fs.writeFileSync(`${target}.lock`, 'a dead process');
      const old = new Date(Date.now() - 10 * 60_000);
      fs.utimesSync(`${target}.lock`, old, old);
      racing = `${target}.lock`;
      await assert.rejects(DotLock.acquire(target, { timeoutMs: 300 }), /timed out waiting for lock/);
      assert.equal(fs.readFileSync(`${target}.lock`, 'utf8'), 'the other process');
    },
  );

  void it('a stale lock is broken by the next writer', { timeout: 10_000 }, async () => {
    const target = join(tmp.path, 'list-d');
    fs.writeFileSync(`${target}.lock`, 'a dead process');
    const old = new Date(Date.now() - 10 * 60_000);
    fs.utimesSync(`${target}.lock`, old, old);
    const lock = await DotLock.acquire(target, { timeoutMs: 1000 });
    await lock.commit('mine\n');
    assert.equal(fs.readFileSync(target, 'utf8'), 'mine\n');
  });
});
