import assert from 'node:assert/strict';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { tempDir } from '@mailyard/testkit';

// A disk that fills up under a write cannot be had on demand: while `full` names a
// directory, a write to a file in it fails with ENOSPC after its first bytes, as on a
// full disk. Set before the store is loaded.
let full: string | null = null;
const realWrite = fs.write;
fs.write = ((fd: number, ...rest: unknown[]) => {
  const cb = rest[rest.length - 1] as (err: NodeJS.ErrnoException | null, n?: number) => void;
  if (full && fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(full + '/')) {
    process.nextTick(
      cb,
      Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }),
    );
    return;
  }
  return (realWrite as (...a: unknown[]) => void)(fd, ...rest);
}) as typeof fs.write;
syncBuiltinESMExports();
const { MailFolder, MaildirStore, folderDir, isStorageFault } = await import('../src/index.js');

const tmp = tempDir('mailstore-deliver-');
after(() => tmp.cleanup());
/** Without links: the paths the kernel gives for the open files. */
const root = fs.realpathSync(tmp.path);
const store = new MaildirStore({ root, hostname: 'mx.test' });

const RECEIVED = new Date();
const copy = (account: string, queueId = 'ABC123') => ({
  account,
  folder: 'INBOX',
  data: Buffer.from('Subject: hi\r\n\r\nbody\r\n'),
  queueId,
  recipient: account,
  receivedAt: RECEIVED,
});

void describe('MaildirStore.deliver', () => {
  void it(
    'a write to a full disk fails as a storage fault and leaves nothing in tmp/',
    { timeout: 10_000 },
    async () => {
      const dir = folderDir(root, 'full@example.test', 'INBOX');
      await store.ensureFolder('full@example.test', 'INBOX');
      full = join(dir, 'tmp');
      try {
        const err = await store.deliver(copy('full@example.test')).catch((e: unknown) => e);
        assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC');
        assert.ok(isStorageFault(err));
      } finally {
        full = null;
      }
      assert.deepEqual(fs.readdirSync(join(dir, 'tmp')), []);
      assert.deepEqual(fs.readdirSync(join(dir, 'new')), []);
      // once there is room again the copy is written
      assert.equal((await store.deliver(copy('full@example.test'))).written, true);
      assert.equal(fs.readdirSync(join(dir, 'new')).length, 1);
    },
  );

  void it(
    'a folder whose new/ was removed after the store made it: made again, the copy written',
    { timeout: 10_000 },
    async () => {
      const dir = folderDir(root, 'restored@example.test', 'INBOX');
      assert.equal((await store.deliver(copy('restored@example.test', 'Q1'))).written, true);
      fs.rmSync(join(dir, 'new'), { recursive: true });
      const res = await store.deliver(copy('restored@example.test', 'Q2'));
      assert.equal(res.written, true);
      assert.deepEqual(fs.readdirSync(join(dir, 'new')), [res.path.slice(res.path.lastIndexOf('/') + 1)]);
      assert.deepEqual(fs.readdirSync(join(dir, 'tmp')), [], 'no part left in tmp/');
    },
  );

  void it(
    'a rerun finds the copy a mail client moved into cur/ and writes none',
    { timeout: 10_000 },
    async () => {
      const dir = folderDir(root, 'moved@example.test', 'INBOX');
      assert.equal((await store.deliver(copy('moved@example.test'))).written, true);
      const [m] = (await new MailFolder(dir, 'INBOX', 'h').snapshot()).messages;
      assert.match(m!.rel, /^cur\//);
      const again = await store.deliver({ ...copy('moved@example.test'), rerun: true });
      assert.equal(again.written, false);
      assert.equal(again.path, join(dir, m!.rel));
      assert.deepEqual(fs.readdirSync(join(dir, 'new')), []);
    },
  );
});
