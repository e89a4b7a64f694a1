// The folder the webmail's pooled IMAP connection has selected, deleted by another client:
// the store ends that connection (BYE), and the pool opens another, so the user's next
// action works rather than failing until the connection idles out.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { plainMessage } from './messages.js';
import { storeSession } from './mail-clients.js';
import { ALICE, startWebmailTestbed, type WebmailTestbed } from './webmail-harness.js';
import { WebClient, q } from './web-client.js';

let t: WebmailTestbed;
let alice: WebClient;

before(async () => {
  // one connection per account: every request takes the one that had the folder selected
  t = await startWebmailTestbed({ webmail: { imap_connections_per_user: 1 } });
  alice = new WebClient(t.webmail.port, t.ca);
  assert.equal((await alice.login(ALICE)).status, 200);
});
after(() => t?.close());

test('a folder deleted under the pool leaves the next actions working', { timeout: 60_000 }, async () => {
  const other = await storeSession(t, ALICE);
  try {
    await other.mailboxCreate('Projects');
    await other.append('Projects', plainMessage({ subject: 'plan' }));
    await other.append('INBOX', plainMessage({ subject: 'hello' }));
    const listed = await alice.get('/api/messages' + q({ folder: 'Projects' }));
    assert.equal(listed.status, 200);

    // another client (a phone, say) deletes the folder the webmail's connection is in
    await other.mailboxDelete('Projects');

    const folders = await alice.get('/api/folders');
    assert.equal(folders.status, 200, JSON.stringify(folders.json));
    const paths = (folders.json.folders as { path: string }[]).map((f) => f.path);
    assert.ok(!paths.includes('Projects'));
    const inbox = await alice.get('/api/messages' + q({ folder: 'INBOX' }));
    assert.equal(inbox.status, 200, JSON.stringify(inbox.json));
    assert.ok(JSON.stringify(inbox.json).includes('hello'));
    // the folder that is gone is told as gone
    const gone = await alice.get('/api/messages' + q({ folder: 'Projects' }));
    assert.deepEqual([gone.status, gone.json.error], [404, 'no_such_folder']);
    assert.equal((await alice.get('/api/folders')).status, 200);
  } finally {
    await other.logout().catch(() => undefined);
  }
});
