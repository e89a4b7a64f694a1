// A NOTIFY session hears of each folder change once, however its events arrive: a change
// made in this process is recorded at once, and again when its own event comes back from
// the bus, which may be after the client was told and after a later change of the same
// name; and of a change the store could not be read for, once it can. Driven against a
// real Maildir, with the echo placed where the broker may put it.
import assert from 'node:assert/strict';
import { renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { accountDir, MailAccount } from '@mailyard/mailstore';
import { tempDir } from '@mailyard/testkit';
import type { AuthedContext } from '../src/imap/context.js';
import { Watch } from '../src/imap/commands/notify.js';

const dir = tempDir('mailyard-notify-watch-');
after(() => dir.cleanup());

/**
 * An account with a folder Play, watched for names and subscriptions, and Play subscribed
 * with the client told so.
 */
async function watchingSubscribedPlay(user: string) {
  const mailbox = new MailAccount(dir.path, `${user}@notify.test`);
  await mailbox.ensureDefaults();
  await mailbox.create('Play');
  const s = { mailbox, selected: null, enabled: { utf8: false } } as unknown as AuthedContext;
  const w = new Watch([
    { filter: 'personal', names: [], events: new Set(['MailboxName', 'SubscriptionChange']), fetch: null },
  ]);
  await w.start(s, false);
  await mailbox.subscribe('Play');
  w.record('Play', { kind: 'subscription' });
  assert.deepEqual(await w.collect(s), ['* LIST (\\Subscribed) "/" "Play"']);
  return { mailbox, s, w };
}

test('a delete after a rename’s late echo is told as \\NonExistent', { timeout: 30_000 }, async () => {
  const mailbox = new MailAccount(dir.path, 'watcher@notify.test');
  await mailbox.ensureDefaults();
  await mailbox.create('Play');
  const s = { mailbox, selected: null, enabled: { utf8: false } } as unknown as AuthedContext;
  const w = new Watch([{ filter: 'personal', names: [], events: new Set(['MailboxName']), fetch: null }]);
  await w.start(s, false);

  const rename = { kind: 'folder', oldFolder: 'Play' } as const;
  await mailbox.rename('Play', 'Games');
  w.record('Games', rename);
  assert.deepEqual(await w.collect(s), ['* LIST () "/" "Games" ("OLDNAME" ("Play"))']);

  // the rename's echo alone: already told
  w.record('Games', rename);
  assert.deepEqual(await w.collect(s), []);

  // the echo, then the delete, before the client's next command
  w.record('Games', rename);
  await mailbox.delete('Games');
  w.record('Games', { kind: 'folder' });
  assert.deepEqual(await w.collect(s), ['* LIST (\\NonExistent) "/" "Games"']);

  // and a folder created again under the name
  await mailbox.create('Games');
  w.record('Games', { kind: 'folder' });
  w.record('Games', rename);
  assert.deepEqual(await w.collect(s), ['* LIST () "/" "Games"']);
});

test(
  'a subscription’s late echo before a rename is not told as an unsubscribe',
  { timeout: 30_000 },
  async () => {
    const { mailbox, s, w } = await watchingSubscribedPlay('subs');

    // the subscription's echo from the bus comes in after RENAME took it along, and before
    // the rename's own event
    await mailbox.rename('Play', 'Games');
    w.record('Play', { kind: 'subscription' });
    w.record('Games', { kind: 'folder', oldFolder: 'Play' });
    assert.deepEqual(await w.collect(s), ['* LIST () "/" "Games" ("OLDNAME" ("Play"))']);
  },
);

test(
  'a subscription’s echo that arrives while a rename is under way waits for the rename',
  { timeout: 30_000 },
  async () => {
    const { mailbox, s, w } = await watchingSubscribedPlay('midrename');

    // the echo is read after the store was renamed, before the rename's own event is
    // recorded: the folder went with its subscription, which is not an unsubscribe
    await mailbox.rename('Play', 'Games');
    w.record('Play', { kind: 'subscription' });
    assert.deepEqual(await w.collect(s), []);
    w.record('Games', { kind: 'folder', oldFolder: 'Play' });
    assert.deepEqual(await w.collect(s), ['* LIST () "/" "Games" ("OLDNAME" ("Play"))']);
    assert.deepEqual(await w.collect(s), []);
  },
);

test(
  'a folder’s late echo that arrives while a rename is under way waits for the rename',
  { timeout: 30_000 },
  async () => {
    const mailbox = new MailAccount(dir.path, 'echo@notify.test');
    await mailbox.ensureDefaults();
    const s = { mailbox, selected: null, enabled: { utf8: false } } as unknown as AuthedContext;
    const w = new Watch([{ filter: 'personal', names: [], events: new Set(['MailboxName']), fetch: null }]);
    await w.start(s, false);
    await mailbox.create('Play');
    w.record('Play', { kind: 'folder' });
    assert.deepEqual(await w.collect(s), ['* LIST () "/" "Play"']);

    // the CREATE's echo from the bus is read after the store was renamed, before the
    // rename's own event is recorded: Play went as the rename, not as a delete
    await mailbox.rename('Play', 'Games');
    w.record('Play', { kind: 'folder' });
    const before = Date.now();
    assert.deepEqual(await w.collect(s), []);
    // the session collects again when the wait is over, should no event come
    assert.ok(w.wakeAt !== null && w.wakeAt >= before && w.wakeAt <= Date.now() + 2000);
    w.record('Games', { kind: 'folder', oldFolder: 'Play' });
    assert.deepEqual(await w.collect(s), ['* LIST () "/" "Games" ("OLDNAME" ("Play"))']);
    assert.equal(w.wakeAt, null);
    assert.deepEqual(await w.collect(s), []);

    // a delete is told at once
    await mailbox.delete('Games');
    w.record('Games', { kind: 'folder' });
    assert.deepEqual(await w.collect(s), ['* LIST (\\NonExistent) "/" "Games"']);
  },
);

test(
  'an unsubscribe read together with its folder’s delete is told with the delete',
  { timeout: 30_000 },
  async () => {
    const { mailbox, s, w } = await watchingSubscribedPlay('unsubdelete');

    await mailbox.unsubscribe('Play');
    await mailbox.delete('Play');
    w.record('Play', { kind: 'subscription' });
    assert.deepEqual(await w.collect(s), []);
    w.record('Play', { kind: 'folder' });
    assert.deepEqual(await w.collect(s), ['* LIST (\\NonExistent) "/" "Play"', '* LIST () "/" "Play"']);
  },
);

test(
  'a folder created while the folder list cannot be read is told once it can',
  { timeout: 30_000 },
  async () => {
    const user = 'unreadable@notify.test';
    const mailbox = new MailAccount(dir.path, user);
    await mailbox.ensureDefaults();
    const s = { mailbox, selected: null, enabled: { utf8: false } } as unknown as AuthedContext;
    const w = new Watch([{ filter: 'personal', names: [], events: new Set(['MailboxName']), fetch: null }]);
    await w.start(s, false);
    await mailbox.create('Work');
    w.record('Work', { kind: 'folder' });
    // every read of the subscriptions fails with EIO, as on a failing disk: the kernel
    // answers a read of /proc/self/mem at offset 0 so
    const file = join(accountDir(dir.path, user), 'subscriptions');
    renameSync(file, `${file}.kept`);
    symlinkSync('/proc/self/mem', file);
    try {
      await assert.rejects(w.collect(s));
    } finally {
      rmSync(file);
      renameSync(`${file}.kept`, file);
    }
    // still waiting to be told, with what came meanwhile
    assert.ok(w.waiting(null));
    await mailbox.create('Later');
    w.record('Later', { kind: 'folder' });
    assert.deepEqual((await w.collect(s)).sort(), ['* LIST () "/" "Later"', '* LIST () "/" "Work"']);
  },
);
