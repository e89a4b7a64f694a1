// Actions on several messages at once through the API, as the list's selection sends them:
// one request marks, flags, moves, archives or deletes them all; ids no longer in the
// folder are skipped and named; too many ids, or anything that is not an id, is a 400 that
// says why; and a list of ids reaches only the user's own mailbox. The server's state is
// read back over IMAP.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import { sendRaw } from '../../retrieval/test/helpers.js';
import { loggedIn, webmailFile } from './file-setup.js';
import { storedFlags } from './mail-clients.js';
import { plainMessage } from './messages.js';
import { ALICE, BOB, type WebmailTestbed } from './webmail-harness.js';
import type { WebClient } from './web-client.js';
import { q } from './web-client.js';

let t: WebmailTestbed;
let alice: WebClient;
let bob: WebClient;
let imap: ImapFlow;

webmailFile({ store: ALICE }, async (f) => {
  ({ t, imap } = f);
  for (let i = 1; i <= 12; i++)
    await sendRaw(t.p, ALICE, plainMessage({ subject: `Bulk ${String(i).padStart(2, '0')}` }));
  await sendRaw(t.p, BOB, plainMessage({ subject: 'Bob keeps this', to: BOB }));
  alice = await loggedIn(t, ALICE);
  bob = await loggedIn(t, BOB);
});

/** The UIDs of alice's messages in `folder` whose subject is one of `subjects`. */
const uidsOf = async (subjects: string[], folder = 'INBOX') => {
  const res = await alice.get('/api/messages' + q({ folder, limit: 200 }));
  assert.equal(res.status, 200, res.text);
  const rows = res.json.rows as { uid: number; subject: string }[];
  return subjects.map((s) => {
    const row = rows.find((r) => r.subject === s);
    assert.ok(row, `${s} in ${folder}`);
    return row.uid;
  });
};

const stored = (folder: string) => storedFlags(imap, folder);

const subjects = (...n: number[]) => n.map((i) => `Bulk ${String(i).padStart(2, '0')}`);

describe('several messages at once', () => {
  test('one request marks, flags, moves, archives and deletes them all', { timeout: 60_000 }, async () => {
    const read = await uidsOf(subjects(1, 2, 3));
    let res = await alice.post('/api/messages/flags', {
      folder: 'INBOX',
      uids: read,
      add: ['seen', 'flagged'],
    });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { uids: read, skipped: [] });
    let inbox = await stored('INBOX');
    for (const s of subjects(1, 2, 3))
      assert.deepEqual([...inbox.get(s)!].sort(), ['\\Flagged', '\\Seen'], s);
    assert.deepEqual([...inbox.get('Bulk 04')!], [], 'the others as they were');

    res = await alice.post('/api/messages/flags', {
      folder: 'INBOX',
      uids: read.slice(0, 2),
      remove: ['flagged'],
    });
    assert.equal(res.status, 200, res.text);
    inbox = await stored('INBOX');
    assert.deepEqual(
      subjects(1, 2, 3).map((s) => inbox.get(s)!.has('\\Flagged')),
      [false, false, true],
    );

    const moving = await uidsOf(subjects(4, 5, 6));
    res = await alice.post('/api/messages/move', { folder: 'INBOX', uids: moving, to: 'Archive' });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.to, 'Archive');
    assert.equal((res.json.moved as (number | null)[]).filter((u) => u !== null).length, 3);
    assert.deepEqual([...(await stored('Archive')).keys()].sort(), subjects(4, 5, 6));

    res = await alice.post('/api/messages/archive', { folder: 'INBOX', uids: await uidsOf(subjects(7, 8)) });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual([...(await stored('Archive')).keys()].sort(), subjects(4, 5, 6, 7, 8));

    res = await alice.post('/api/messages/delete', { folder: 'INBOX', uids: await uidsOf(subjects(9, 10)) });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual([...(await stored('Trash')).keys()].sort(), subjects(9, 10));
    // from Trash, for good
    res = await alice.post('/api/messages/delete', {
      folder: 'Trash',
      uids: await uidsOf(subjects(9, 10), 'Trash'),
    });
    assert.equal(res.json.deleted, true);
    assert.equal((await stored('Trash')).size, 0);
    assert.deepEqual([...(await stored('INBOX')).keys()].sort(), subjects(1, 2, 3, 11, 12));
  });

  test('ids no longer in the folder are skipped and named, never an error', { timeout: 30_000 }, async () => {
    const [a, b] = await uidsOf(subjects(11, 12));
    const res = await alice.post('/api/messages/flags', {
      folder: 'INBOX',
      uids: [a, 424242, b, 424242],
      add: ['seen'],
    });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { uids: [a, b], skipped: [424242] });
    const inbox = await stored('INBOX');
    for (const s of subjects(11, 12)) assert.ok(inbox.get(s)!.has('\\Seen'), s);
    // moved by another client meanwhile: the rest still moves
    const [gone] = await uidsOf(subjects(11));
    const lock = await imap.getMailboxLock('INBOX');
    try {
      await imap.messageMove(String(gone), 'Archive', { uid: true });
    } finally {
      lock.release();
    }
    const [stays] = await uidsOf(subjects(12));
    const moved = await alice.post('/api/messages/move', {
      folder: 'INBOX',
      uids: [gone, stays],
      to: 'Trash',
    });
    assert.equal(moved.status, 200, moved.text);
    assert.deepEqual([moved.json.uids, moved.json.skipped], [[stays], [gone]]);
    // none there at all is still "no such message"
    const none = await alice.post('/api/messages/move', {
      folder: 'INBOX',
      uids: [gone, 424242],
      to: 'Trash',
    });
    assert.deepEqual([none.status, none.json.error], [404, 'no_such_message']);
  });

  test('too many ids, or anything that is not an id, is a 400 saying why', { timeout: 30_000 }, async () => {
    const [uid] = await uidsOf(subjects(1));
    // the most one request takes, sparse and long: still one command line for the store
    const most = [uid!, ...Array.from({ length: 4999 }, (_, i) => 4_000_000_000 + i * 7)];
    const ok = await alice.post('/api/messages/flags', { folder: 'INBOX', uids: most, add: ['flagged'] });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual([ok.json.uids, ok.json.skipped.length], [[uid], 4999]);

    const over = await alice.post('/api/messages/flags', {
      folder: 'INBOX',
      uids: [...most, 4_200_000_000],
      add: ['seen'],
    });
    assert.deepEqual([over.status, over.json.error], [400, 'bad_request']);
    assert.match(over.json.message as string, /at most 5000 messages/);

    for (const uids of [
      [],
      'all',
      7,
      [true],
      [[uid]],
      [uid, null],
      [0],
      [-3],
      [1.5],
      ['1e3'],
      [' 7'],
      [2 ** 32],
    ]) {
      for (const path of ['/api/messages/flags', '/api/messages/move', '/api/messages/delete']) {
        const res = await alice.post(path, { folder: 'INBOX', uids, add: ['seen'], to: 'Archive' });
        assert.deepEqual(
          [res.status, res.json.error],
          [400, 'bad_request'],
          `${path} ${JSON.stringify(uids)}`,
        );
        assert.match(
          res.json.message as string,
          /^uids(\.\d+)?: expected (a |a list of )?message ids?$/,
          res.text,
        );
      }
    }
    // digits as text are still an id, as before
    const text = await alice.post('/api/messages/flags', {
      folder: 'INBOX',
      uids: [String(uid)],
      remove: ['flagged'],
    });
    assert.deepEqual([text.status, text.json.uids], [200, [uid]]);
    assert.ok(!(await stored('INBOX')).get('Bulk 01')!.has('\\Flagged'));
  });

  test("a list of ids reaches only the user's own mailbox", { timeout: 30_000 }, async () => {
    const alices = await uidsOf(subjects(1, 2, 3));
    const bobsRow = (await bob.get('/api/messages' + q({ folder: 'INBOX' }))).json.rows[0] as { uid: number };
    const before = await stored('INBOX');
    // alice's ids above bob's are nothing in bob's mailbox
    const high = alices.filter((u) => u > bobsRow.uid);
    assert.ok(high.length >= 2);
    for (const [path, body] of [
      ['/api/messages/flags', { add: ['flagged'] }],
      ['/api/messages/move', { to: 'Archive' }],
      ['/api/messages/delete', {}],
    ] as const) {
      const res = await bob.post(path, { folder: 'INBOX', uids: high, ...body });
      assert.deepEqual([res.status, res.json.error], [404, 'no_such_message'], path);
    }
    // with one of bob's own: only his is touched
    const mixed = await bob.post('/api/messages/flags', {
      folder: 'INBOX',
      uids: [bobsRow.uid, ...high],
      add: ['flagged'],
    });
    assert.deepEqual([mixed.status, mixed.json.uids, mixed.json.skipped], [200, [bobsRow.uid], high]);
    // and a folder of alice's name is bob's own folder, or none
    const nowhere = await bob.post('/api/messages/move', {
      folder: 'INBOX',
      uids: high,
      to: 'alice/Archive',
    });
    assert.equal(nowhere.status, 404);
    assert.deepEqual(await stored('INBOX'), before, "alice's mailbox as it was");
  });
});
