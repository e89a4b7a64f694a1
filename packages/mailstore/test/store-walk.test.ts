import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { tempDir } from '@mailyard/testkit';
import { MailAccount, accountDir, walkStore, type StoreFile } from '../src/index.js';

const tmp = tempDir('store-walk-');
after(() => tmp.cleanup());
let n = 0;
const fresh = () => join(tmp.path, `r${++n}`);
const msg = (i: number) => Buffer.from(`Subject: m${i}\r\n\r\nbody ${i}\r\n`);
const date = new Date('2025-01-06T10:00:00Z');

async function text(f: StoreFile): Promise<string> {
  const opened = await f.open();
  assert.ok(opened, f.rel);
  const chunks: Buffer[] = [];
  for await (const c of opened.stream) chunks.push(c as Buffer);
  const body = Buffer.concat(chunks);
  assert.equal(body.length, opened.size, f.rel);
  return body.toString();
}

void describe('walkStore', () => {
  void it(
    'hands over every folder and file of every account, and nothing transient',
    { timeout: 30_000 },
    async () => {
      const root = fresh();
      const alice = new MailAccount(root, 'alice@example.org');
      await alice.ensureDefaults();
      await alice.folder('INBOX').append(msg(1), ['\\Seen'], date);
      await alice.folder('Archive').append(msg(2), [], date);
      await new MailAccount(root, 'bob@example.net').folder('INBOX').ensure();
      const seen: string[] = [];
      const stats = await walkStore(root, async (item) => {
        seen.push('folder' in item ? `${item.folder}/` : item.rel);
      });
      assert.deepEqual(stats, { accounts: 2, folders: 7, messages: 2, bytes: msg(1).length + msg(2).length });
      assert.ok(seen.includes('example.net/bob/'));
      assert.ok(seen.includes('example.org/alice/.Archive/'));
      assert.ok(seen.includes('example.org/alice/dovecot-uidlist'));
      assert.ok(seen.includes('example.org/alice/subscriptions'));
      assert.equal(seen.filter((s) => /^example\.org\/alice\/cur\/[^/]+:2,S$/.test(s)).length, 1);
      assert.ok(!seen.some((s) => s.endsWith('.lock') || s.includes('/tmp/')), seen.join('\n'));
      // the walk leaves no lock behind
      assert.equal(existsSync(join(accountDir(root, 'alice@example.org'), 'dovecot-uidlist.lock')), false);
    },
  );

  void it(
    'lists a folder under its lock, then copies without it: a flag change meanwhile neither waits nor shows',
    { timeout: 30_000 },
    async () => {
      const root = fresh();
      const inbox = new MailAccount(root, 'alice@example.org').folder('INBOX');
      await inbox.ensure();
      for (let i = 1; i <= 3; i++) await inbox.append(msg(i), [], date);
      const events: string[] = [];
      const copied = new Map<string, string>();
      let flagged = false;
      await walkStore(root, async (item) => {
        if ('folder' in item) return;
        const name = item.rel.split('/').slice(2).join('/');
        if (!flagged && (name.startsWith('cur/') || name.startsWith('new/'))) {
          // another session flags every message (renaming their files) while the copy of
          // the folder's messages is under way: it does not wait for the copy to end
          flagged = true;
          await inbox.store([1, 2, 3].map((uid) => ({ uid, op: 'add' as const, flags: ['\\Flagged'] })));
          events.push('flagged');
        }
        copied.set(name, await text(item));
        events.push(`copied ${name}`);
      });
      assert.equal(events.filter((e) => e.startsWith('copied cur/')).length, 3, events.join('\n'));
      assert.ok(events.indexOf('flagged') < events.indexOf(events.find((e) => e.startsWith('copied cur/'))!));
      // the copy is of the moment of the listing: the names without the flag, the UID list
      // and state they go with, and each message's content although its file was renamed
      const names = [...copied.keys()].filter((k) => k.startsWith('cur/') || k.startsWith('new/'));
      assert.equal(names.length, 3);
      assert.ok(
        names.every((k) => !/:2,[^/]*F/.test(k)),
        names.join('\n'),
      );
      const list = copied.get('dovecot-uidlist')!;
      for (const k of names) assert.ok(list.includes(k.slice(4).split(':')[0]!), `${k} in the UID list`);
      assert.deepEqual(
        names.map((k) => copied.get(k)).sort(),
        [1, 2, 3].map((i) => msg(i).toString()).sort(),
      );
      // and the folder now has the flag
      const after = await inbox.snapshot();
      assert.ok(after.messages.every((m) => m.flags.includes('\\Flagged')));
    },
  );

  void it('an empty or missing root is nothing to copy', { timeout: 10_000 }, async () => {
    assert.deepEqual(await walkStore(join(tmp.path, 'none'), () => Promise.resolve()), {
      accounts: 0,
      folders: 0,
      messages: 0,
      bytes: 0,
    });
  });
});
