// Folders made, renamed and deleted through the API, as the folder list sends them. What
// the store holds afterwards is read by another IMAP client (imapflow): the folder list,
// the messages that moved with a renamed folder, the subscriptions. Bad names are a 400
// that says why, the store's refusals keep their meaning (a name taken 409, a folder not
// there 404), the special-use folders are never renamed or deleted, and a store that
// cannot be reached is 503, never "not found".
import assert from 'node:assert/strict';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { describe, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import { sendRaw } from '../../retrieval/test/helpers.js';
import type { FolderInfo } from '../src/api-types.js';
import { noneSpecial } from '../src/routes-folders.js';
import { loggedIn, webmailFile } from './file-setup.js';
import { plainMessage } from './messages.js';
import { ALICE, BOB, type WebmailTestbed } from './webmail-harness.js';
import { WebClient, q } from './web-client.js';

let t: WebmailTestbed;
let alice: WebClient;
let bob: WebClient;
let imap: ImapFlow;

webmailFile({ store: ALICE }, async (f) => {
  ({ t, imap } = f);
  alice = await loggedIn(t, ALICE);
  bob = await loggedIn(t, BOB);
});

/** Alice's folders as another IMAP client lists them. */
const stored = async () => (await imap.list()).map((f) => f.path).sort();
/** Alice's subscriptions, as LSUB gives them (also those of folders that are gone). */
async function subscribed(): Promise<string[]> {
  type Attr = { value?: string };
  const exec = (
    imap as unknown as {
      exec(
        cmd: string,
        attrs: { type: string; value: string }[],
        opts: { untagged: Record<string, (u: { attributes?: Attr[] }) => Promise<void>> },
      ): Promise<{ next(): void }>;
    }
  ).exec.bind(imap);
  const names: string[] = [];
  const res = await exec(
    'LSUB',
    [
      { type: 'STRING', value: '' },
      { type: 'STRING', value: '*' },
    ],
    {
      untagged: { LSUB: async (u) => void names.push(u.attributes?.[2]?.value ?? '') },
    },
  );
  res.next();
  return names;
}

const errorOf = (res: { status: number; json: { error: string } }) => [res.status, res.json.error];

describe('folders through the API', () => {
  test('made at the top and inside another, seen by an IMAP client', { timeout: 60_000 }, async () => {
    let res = await alice.post('/api/folders', { name: '  Projects ' });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { path: 'Projects' });
    res = await alice.post('/api/folders', { name: 'Café 2026', parent: 'Projects' });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { path: 'Projects/Café 2026' });
    const folders = await stored();
    assert.ok(folders.includes('Projects') && folders.includes('Projects/Café 2026'), String(folders));
    assert.ok((await subscribed()).includes('Projects/Café 2026'), 'subscribed, for clients that list those');
    const list = await alice.get('/api/folders');
    assert.ok(list.json.folders.some((f: { path: string }) => f.path === 'Projects/Café 2026'));
  });

  test('bad names are a 400 that says why; a name taken a 409', { timeout: 60_000 }, async () => {
    const bad: [unknown, RegExp][] = [
      ['', /needs a name/],
      ['   ', /needs a name/],
      ['x'.repeat(101), /at most 100 characters/],
      ['Work/Old', /cannot contain "\/"/],
      ['100%', /cannot contain % or \*/],
      ['Tab\there', /control characters/],
      ['..', /cannot be named \. or \.\./],
      [42, /expected a folder name/],
    ];
    for (const [name, why] of bad) {
      const res = await alice.post('/api/folders', { name });
      assert.deepEqual(errorOf(res), [400, 'bad_request'], JSON.stringify(name));
      assert.match(res.json.message, why);
    }
    assert.deepEqual(errorOf(await alice.post('/api/folders', { name: 'A', parent: 'Nowhere' })), [
      404,
      'no_such_folder',
    ]);
    for (const name of ['Projects', 'Trash', 'INBOX']) {
      const res = await alice.post('/api/folders', { name });
      assert.deepEqual(errorOf(res), [409, 'folder_exists'], name);
      assert.equal(res.json.message, 'A folder of that name already exists');
    }
    // as the folder list offers: only the user's own folders hold others
    for (const parent of ['INBOX', 'Sent', 'Archive']) {
      const res = await alice.post('/api/folders', { name: 'Inner', parent });
      assert.deepEqual(errorOf(res), [400, 'special_folder'], parent);
      assert.match(res.json.message, /cannot hold other folders/);
    }
    assert.ok(!(await stored()).some((f) => f.endsWith('/Inner')), 'nothing made inside them');
    assert.ok(!(await stored()).some((f) => f.startsWith('Work')), 'nothing was made of the bad names');
  });

  test('renamed with its messages and the folders under it', { timeout: 60_000 }, async () => {
    await sendRaw(t.p, ALICE, plainMessage({ subject: 'Filed away' }));
    const inbox = await alice.get('/api/messages' + q({ folder: 'INBOX' }));
    const uid = (inbox.json.rows as { uid: number; subject: string }[]).find(
      (r) => r.subject === 'Filed away',
    )!.uid;
    assert.equal(
      (await alice.post('/api/messages/move', { folder: 'INBOX', uids: [uid], to: 'Projects' })).status,
      200,
    );
    const res = await alice.post('/api/folders/rename', { folder: 'Projects', name: 'Clients' });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { path: 'Clients', from: 'Projects' });
    const folders = await stored();
    assert.ok(folders.includes('Clients') && folders.includes('Clients/Café 2026'), String(folders));
    assert.ok(!folders.some((f) => f.startsWith('Projects')), String(folders));
    const moved = await alice.get('/api/messages' + q({ folder: 'Clients' }));
    assert.deepEqual(
      moved.json.rows.map((r: { subject: string }) => r.subject),
      ['Filed away'],
    );
    // a child keeps its place under the renamed folder
    const child = await alice.post('/api/folders/rename', { folder: 'Clients/Café 2026', name: 'Done' });
    assert.deepEqual(child.json, { path: 'Clients/Done', from: 'Clients/Café 2026' });

    assert.deepEqual(errorOf(await alice.post('/api/folders/rename', { folder: 'Clients', name: 'Junk' })), [
      409,
      'folder_exists',
    ]);
    assert.deepEqual(
      errorOf(await alice.post('/api/folders/rename', { folder: 'Projects', name: 'Again' })),
      [404, 'no_such_folder'],
    );
    const slash = await alice.post('/api/folders/rename', { folder: 'Clients', name: 'a/b' });
    assert.deepEqual(errorOf(slash), [400, 'bad_request']);
    // another account's client cannot reach alice's folder: bob has none of that name
    assert.deepEqual(errorOf(await bob.post('/api/folders/rename', { folder: 'Clients', name: 'Mine' })), [
      404,
      'no_such_folder',
    ]);
    assert.ok((await stored()).includes('Clients'));
  });

  test('the special-use folders are neither renamed nor deleted', { timeout: 60_000 }, async () => {
    for (const folder of ['INBOX', 'Sent', 'Drafts', 'Trash', 'Junk', 'Archive']) {
      const rename = await alice.post('/api/folders/rename', { folder, name: 'Renamed' });
      assert.deepEqual(errorOf(rename), [400, 'special_folder'], folder);
      assert.match(rename.json.message, /cannot be renamed or deleted/);
      assert.deepEqual(errorOf(await alice.post('/api/folders/delete', { folder })), [400, 'special_folder']);
    }
    assert.equal(
      (await alice.post('/api/folders/rename', { folder: 'INBOX', name: 'x' })).json.message.split(' ')[0],
      'Inbox',
    );
    const folders = await stored();
    for (const f of ['INBOX', 'Sent', 'Drafts', 'Trash', 'Junk', 'Archive'])
      assert.ok(folders.includes(f), f);
    assert.ok(!folders.includes('Renamed'));
  });

  test(
    'a folder with a special-use folder under it is neither renamed nor deleted',
    { timeout: 5_000 },
    () => {
      // our store marks special use at the top only; Dovecot may have it anywhere (a Sent
      // under Projects, set by another client): moved or deleted with Projects, the webmail
      // would no longer find where sent mail goes
      const folder = (path: string, specialUse: string | null = null): FolderInfo => ({
        path,
        name: path.split('/').pop()!,
        parent: path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '',
        delimiter: '/',
        specialUse,
        total: 0,
        unseen: 0,
        selectable: true,
      });
      const folders = [
        folder('INBOX'),
        folder('Projects'),
        folder('Projects/Sent', '\\Sent'),
        folder('Other'),
      ];
      assert.throws(
        () => noneSpecial(folders, folders[1]!),
        (e: { code: string; message: string }) =>
          e.code === 'special_folder' && /^Sent cannot be renamed or deleted/.test(e.message),
      );
      assert.throws(() => noneSpecial(folders, folders[0]!), /Inbox cannot/);
      assert.deepEqual(
        noneSpecial(folders, folders[3]!).map((f) => f.path),
        ['Other'],
      );
    },
  );

  test('deleted with its messages and the folders under it', { timeout: 60_000 }, async () => {
    const res = await alice.post('/api/folders/delete', { folder: 'Clients' });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { deleted: ['Clients/Done', 'Clients'] });
    const folders = await stored();
    assert.ok(!folders.some((f) => f.startsWith('Clients')), String(folders));
    assert.ok(!(await subscribed()).some((f) => f.startsWith('Clients')), 'no subscription left behind');
    assert.deepEqual(errorOf(await alice.get('/api/messages' + q({ folder: 'Clients' }))), [
      404,
      'no_such_folder',
    ]);
    assert.deepEqual(errorOf(await alice.post('/api/folders/delete', { folder: 'Clients' })), [
      404,
      'no_such_folder',
    ]);
  });

  test(
    'a folder under it removed meanwhile by another client does not stop the delete',
    { timeout: 60_000 },
    async () => {
      for (const path of ['Race', 'Race/One', 'Race/Two']) await imap.mailboxCreate(path);
      // the webmail's IMAP goes through a stand-in for the store: the moment the webmail asks
      // to delete a folder under Race, another client (a phone, say) deletes it first
      let raced = '';
      const proxy = createServer({ key: t.key, cert: t.ca }, (client: TLSSocket) => {
        const store = connect({
          host: '127.0.0.1',
          port: t.retrieval.ports.imaps,
          rejectUnauthorized: false,
        });
        store.pipe(client);
        client.on('data', (chunk: Buffer) => {
          const child = /DELETE "?(Race\/\w+)/.exec(chunk.toString('latin1'))?.[1];
          if (raced || !child) return void store.write(chunk);
          raced = child;
          client.pause();
          void imap.mailboxDelete(child).then(() => {
            store.write(chunk);
            client.resume();
          });
        });
        const end = () => (client.destroy(), store.destroy());
        client.on('error', end).on('close', end);
        store.on('error', end).on('close', end);
      });
      await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
      try {
        const port = (proxy.address() as { port: number }).port;
        const w = await t.another({ imap_server: `127.0.0.1:${port}` });
        const c = new WebClient(w.port, t.ca);
        assert.equal((await c.login(ALICE)).status, 200);
        const res = await c.post('/api/folders/delete', { folder: 'Race' });
        assert.ok(raced, 'the other client deleted a folder under Race first');
        assert.equal(res.status, 200, res.text);
        assert.deepEqual([...res.json.deleted].sort(), ['Race', 'Race/One', 'Race/Two']);
        assert.ok(!(await stored()).some((f) => f.startsWith('Race')), String(await stored()));
      } finally {
        proxy.close();
      }
    },
  );

  test('a store that cannot be reached is 503, never "not found"', { timeout: 60_000 }, async () => {
    const down = await t.another({ imap_server: '127.0.0.1:1' });
    const c = new WebClient(down.port, t.ca);
    await c.login(ALICE);
    for (const [path, body] of [
      ['/api/folders', { name: 'Offline' }],
      ['/api/folders/rename', { folder: 'Archive', name: 'Offline' }],
      ['/api/folders/delete', { folder: 'Offline' }],
    ] as const)
      assert.deepEqual(errorOf(await c.post(path, body)), [503, 'unavailable'], path);
  });
});
