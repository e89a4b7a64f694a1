// `mailyard backup` of a running platform (mail delivered through mta-inbound and
// delivery, flags set and a message appended over IMAP, retrieval serving), restored
// with `mailyard restore` into an empty platform (another Redis prefix, vhost and Maildir
// root): the same login reads the same messages with the same UIDs, UIDVALIDITY, flags,
// dates and bytes, and mail delivered afterwards gets the next UID.
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ImapFlow } from 'imapflow';
import { tempDir } from '@mailyard/testkit';
import {
  PASSWORD,
  sampleMessage,
  sendRaw,
  startRetrieval,
  type Retrieval,
} from '../services/retrieval/test/helpers.js';
import { addAccount, runMailyard, startPlatform, type Platform } from './harness.js';

const USER = 'alice@example.test';
const running: { p: Platform; r: Retrieval }[] = [];
after(async () => {
  for (const { p, r } of running) {
    await r.stop();
    await p.close();
  }
});

async function platform(): Promise<{ p: Platform; r: Retrieval }> {
  const p = await startPlatform();
  const r = await startRetrieval(p);
  running.push({ p, r });
  return { p, r };
}

function client(r: Retrieval): ImapFlow {
  return new ImapFlow({
    host: '127.0.0.1',
    port: r.ports.imap,
    secure: false,
    doSTARTTLS: false,
    auth: { user: USER, pass: PASSWORD },
    logger: false,
    tls: { rejectUnauthorized: false },
  });
}

interface Seen {
  uidValidity: string;
  messages: { uid: number; flags: string[]; date: string; source: string }[];
}

/** What a client sees of a folder: UIDVALIDITY and every message's UID, flags, INTERNALDATE and bytes. */
async function read(c: ImapFlow, folder: string): Promise<Seen> {
  const box = await c.mailboxOpen(folder, { readOnly: true });
  const messages: Seen['messages'] = [];
  for await (const m of c.fetch('1:*', { uid: true, flags: true, internalDate: true, source: true }))
    messages.push({
      uid: m.uid,
      flags: [...(m.flags ?? [])].sort(),
      date: new Date(m.internalDate!).toISOString(),
      source: m.source!.toString('latin1'),
    });
  await c.mailboxClose();
  return { uidValidity: String(box.uidValidity), messages };
}

test(
  'a backup of a running platform restores into an empty one: same login, messages, UIDs and flags',
  { timeout: 180_000 },
  async () => {
    const a = await platform();
    await addAccount(a.p.directory, USER);
    for (let i = 1; i <= 3; i++) await sendRaw(a.p, USER, sampleMessage(i));
    const c = client(a.r);
    await c.connect();
    await c.mailboxOpen('INBOX');
    await c.messageFlagsAdd('1', ['\\Seen'], { uid: true });
    await c.messageFlagsAdd('2', ['\\Flagged', '$Work'], { uid: true });
    await c.messageDelete('3', { uid: true });
    await c.mailboxClose();
    await c.append('Archive', sampleMessage(9), ['\\Seen', '\\Answered'], new Date('2024-05-01T08:30:00Z'));
    const before = { inbox: await read(c, 'INBOX'), archive: await read(c, 'Archive') };
    await c.logout();
    assert.deepEqual(
      before.inbox.messages.map((m) => [m.uid, m.flags]),
      [
        [1, ['\\Seen']],
        [2, ['$Work', '\\Flagged']],
      ],
    );

    const dir = tempDir();
    const archive = join(dir.path, 'mailyard.tar.gz');
    try {
      // while mta-inbound, delivery and retrieval run
      const out = await runMailyard(a.p, ['backup', archive]);
      assert.match(out, /^backed up \d+ Redis keys, 1 mailbox, 6 folders, 3 messages /);
      assert.equal(statSync(archive).mode & 0o777, 0o600);

      const b = await platform();
      assert.match(await runMailyard(b.p, ['restore', archive]), /^restored .* 3 messages /);
      const c2 = client(b.r);
      await c2.connect();
      const restored = { inbox: await read(c2, 'INBOX'), archive: await read(c2, 'Archive') };
      assert.deepEqual(restored, before);

      // the restored platform goes on: the account receives mail, numbered after the rest
      await sendRaw(b.p, USER, sampleMessage(4));
      const inbox = await read(c2, 'INBOX');
      assert.deepEqual(
        inbox.messages.map((m) => m.uid),
        [1, 2, 4],
      );
      assert.equal(inbox.uidValidity, before.inbox.uidValidity);
      await c2.logout();

      // a second restore into it is refused: it holds data now
      await assert.rejects(
        runMailyard(b.p, ['restore', archive]),
        /mailyard: the platform is not empty \(Redis has keys under the prefix "[^"]+"\); restore into an empty one, or add --force to overwrite/,
      );

      // from a backup older than what clients saw: the same mail under a new UIDVALIDITY,
      // so a client throws away what it holds of the folder (UID 4 is not reissued to it)
      const d = await platform();
      assert.match(await runMailyard(d.p, ['restore', '--new-uidvalidity', archive]), /^restored /);
      const c3 = client(d.r);
      await c3.connect();
      const renumbered = { inbox: await read(c3, 'INBOX'), archive: await read(c3, 'Archive') };
      await c3.logout();
      assert.deepEqual(renumbered.inbox.messages, before.inbox.messages);
      assert.deepEqual(renumbered.archive.messages, before.archive.messages);
      assert.notEqual(renumbered.inbox.uidValidity, before.inbox.uidValidity);
      assert.notEqual(renumbered.archive.uidValidity, before.archive.uidValidity);
      assert.ok(Number(renumbered.inbox.uidValidity) > Number(before.inbox.uidValidity));
    } finally {
      dir.cleanup();
    }
  },
);
