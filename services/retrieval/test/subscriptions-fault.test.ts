// A subscription list the store cannot read (a disk answering EIO, a file the service may
// not read) is not an empty list: LSUB fails for now, and neither a login nor SUBSCRIBE
// writes a new list over the one that could not be read, which would lose the user's
// subscriptions for good.
import assert from 'node:assert/strict';
import { lstatSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { accountDir } from '@mailyard/mailstore';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, startRetrieval, type Retrieval } from './helpers.js';
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

async function login(): Promise<RawImap> {
  const c = await RawImap.connect(r.ports.imap);
  await c.until(/^\* OK/m);
  assert.match(await c.cmd('l', `LOGIN ${USER} "${PASSWORD}"`), /^l OK/m);
  return c;
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
    const kept = `${file}.kept`;
    renameSync(file, kept);
    // every read of the list fails with EIO, as on a failing disk: the kernel answers a
    // read of /proc/self/mem at offset 0 so
    symlinkSync('/proc/self/mem', file);
    try {
      c = await login();
      assert.ok(lstatSync(file).isSymbolicLink(), 'the login wrote no list over it');
      assert.match(await c.cmd('a', 'LSUB "" "*"'), /^a NO /m);
      // a LIST that shows no subscriptions does not need them
      assert.match(await c.cmd('b', 'LIST "" "*"'), /^\* LIST \([^)]*\) "\/" "Work"\r\n[^]*^b OK/m);
      assert.match(await c.cmd('d', 'SUBSCRIBE INBOX'), /^d NO /m);
      assert.ok(lstatSync(file).isSymbolicLink(), 'SUBSCRIBE wrote no list over it');
      c.socket.destroy();
    } finally {
      rmSync(file);
      renameSync(kept, file);
    }
    assert.match(readFileSync(file, 'utf8'), /^Work$/m);
    c = await login();
    assert.match(await c.cmd('e', 'LSUB "" "*"'), /^\* LSUB \(\) "\/" "Work"\r\n[^]*^e OK/m);
    c.socket.destroy();
  },
);
