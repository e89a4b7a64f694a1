// Reading mail through the API: folders, pages of a list (sorted, searched, threaded),
// a message with its attachments and sanitised HTML, the actions, new mail pushed over
// the event stream, and bad input of every kind.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Bus } from '@mailyard/bus';
import { EventKeys } from '@mailyard/contracts';
import { createLogger } from '@mailyard/observability';
import { Quotas } from '@mailyard/mailstore';
import { waitFor } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
import { sendRaw } from '../../retrieval/test/helpers.js';
import { loggedIn, webmailFile } from './file-setup.js';
import { newsletter, plainMessage } from './messages.js';
import { storeSession } from './mail-clients.js';
import { ALICE, BOB, type WebmailTestbed } from './webmail-harness.js';
import { WebClient, openEvents, q } from './web-client.js';

const REMOTE = 'http://127.0.0.5:8099';
let t: WebmailTestbed;
let alice: WebClient;
let bob: WebClient;

webmailFile({}, async (f) => {
  t = f.t;
  // a conversation of three, then single messages: 23 in all in alice's INBOX
  await sendRaw(
    t.p,
    ALICE,
    plainMessage({
      subject: 'Lunch?',
      messageId: '<t1@remote.example>',
      date: 'Mon, 6 Jan 2025 10:00:00 +0000',
    }),
  );
  await sendRaw(
    t.p,
    ALICE,
    plainMessage({
      subject: 'Re: Lunch?',
      messageId: '<t2@remote.example>',
      inReplyTo: '<t1@remote.example>',
      date: 'Mon, 6 Jan 2025 11:00:00 +0000',
    }),
  );
  for (let i = 0; i < 20; i++) {
    const subject = ['Cherry', 'apple', 'Banana', 'durian'][i % 4]! + ` ${String(i).padStart(2, '0')}`;
    await sendRaw(
      t.p,
      ALICE,
      plainMessage({
        subject,
        from: `"S${i}" <s${i}@remote.example>`,
        body: i === 7 ? 'the word zeppelin is in here' : undefined,
        date: `Wed, ${8 + (i % 3)} Jan 2025 10:${String(i).padStart(2, '0')}:00 +0000`,
      }),
    );
  }
  await sendRaw(
    t.p,
    ALICE,
    plainMessage({
      subject: 'Re: Re: Lunch?',
      messageId: '<t3@remote.example>',
      references: '<t1@remote.example> <t2@remote.example>',
      date: 'Fri, 10 Jan 2025 12:00:00 +0000',
    }),
  );
  await sendRaw(t.p, ALICE, newsletter(REMOTE));
  await sendRaw(t.p, BOB, plainMessage({ subject: 'for bob only', to: BOB, body: 'bob-secret-text' }));
  alice = await loggedIn(t, ALICE);
  bob = await loggedIn(t, BOB);
});

const list = async (c: WebClient, params: Record<string, string | number | boolean>) => {
  const res = await c.get('/api/messages' + q({ folder: 'INBOX', ...params }));
  assert.equal(res.status, 200, res.text);
  return res.json as {
    total: number;
    offset: number;
    rows: {
      uid: number;
      subject: string;
      flags: Record<string, boolean>;
      attachment: boolean;
      thread?: { uids: number[]; count: number; unread: number };
    }[];
  };
};
const uidOf = async (subject: string, folder = 'INBOX') => {
  const res = await alice.get('/api/messages' + q({ folder, limit: 200 }));
  const row = (res.json.rows as { uid: number; subject: string }[]).find((r) => r.subject === subject);
  assert.ok(row, `${subject} in ${folder}`);
  return row.uid;
};

/** A message to bob with one attachment: `part` is its headers, a blank line and its body. */
const withAttachment = (subject: string, part: string[]) =>
  [
    'From: <sender@remote.example>',
    `To: ${BOB}`,
    `Subject: ${subject}`,
    'Date: Mon, 6 Jan 2025 10:00:00 +0000',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary=b',
    '',
    '--b',
    'Content-Type: text/plain',
    '',
    'see attached',
    '--b',
    ...part,
    '--b--',
    '',
  ].join('\r\n');

describe('folders and lists', () => {
  test('folders come special-use first, with counts', { timeout: 30_000 }, async () => {
    const res = await alice.get('/api/folders');
    assert.equal(res.status, 200);
    const folders = res.json.folders as {
      path: string;
      specialUse: string | null;
      total: number;
      unseen: number;
    }[];
    assert.deepEqual(
      folders.map((f) => f.path),
      ['INBOX', 'Drafts', 'Sent', 'Archive', 'Junk', 'Trash'],
    );
    assert.deepEqual([folders[0]!.total, folders[0]!.unseen], [24, 24]);
  });

  test('pages, newest first by default, or sorted on the server', { timeout: 30_000 }, async () => {
    const first = await list(alice, { limit: 10 });
    assert.equal(first.total, 24);
    assert.equal(first.rows.length, 10);
    assert.equal(first.rows[0]!.subject, 'Spring offers');
    assert.ok(first.rows[0]!.attachment, 'multipart/mixed is shown as having attachments');
    const uids = first.rows.map((r) => r.uid);
    assert.deepEqual(
      uids,
      [...uids].sort((a, b) => b - a),
    );
    const last = await list(alice, { limit: 10, offset: 20 });
    assert.equal(last.rows.length, 4);
    assert.equal(last.rows.at(-1)!.subject, 'Lunch?');
    const beyond = await list(alice, { offset: 500 });
    assert.deepEqual([beyond.total, beyond.rows.length], [24, 0]);
    // SORT SUBJECT ignores case and "Re:" (RFC 5256 base subject)
    const bySubject = await list(alice, { sort: 'subject', order: 'asc', limit: 6 });
    assert.deepEqual(
      bySubject.rows.map((r) => r.subject),
      ['apple 01', 'apple 05', 'apple 09', 'apple 13', 'apple 17', 'Banana 02'],
    );
    const bySize = await list(alice, { sort: 'size', order: 'desc', limit: 1 });
    assert.equal(bySize.rows[0]!.subject, 'Spring offers');
  });

  test(
    'search: words in subject, sender or body; from:, is:unread; combined',
    { timeout: 30_000 },
    async () => {
      assert.deepEqual(
        (await list(alice, { q: 'zeppelin' })).rows.map((r) => r.subject),
        ['durian 07'],
      );
      assert.equal((await list(alice, { q: 'banana' })).total, 5);
      assert.deepEqual(
        (await list(alice, { q: 'from:s13@remote.example' })).rows.map((r) => r.subject),
        ['apple 13'],
      );
      assert.equal((await list(alice, { q: 'lunch' })).total, 3);
      assert.equal((await list(alice, { q: '"spring offers"' })).total, 1);
      assert.equal((await list(alice, { q: 'nothing-matches-this' })).total, 0);
      // UTF-8 search terms: found in the newsletter's text attachment
      assert.equal((await list(alice, { q: 'Grüße' })).total, 1);
      assert.equal((await list(alice, { unread: 1 })).total, 24);
    },
  );

  test('conversations: one row per thread, newest activity first', { timeout: 30_000 }, async () => {
    const threads = await list(alice, { threads: 1, limit: 50 });
    assert.equal(threads.total, 22);
    const lunch = threads.rows.find((r) => r.thread!.count === 3);
    assert.ok(lunch);
    assert.equal(lunch.subject, 'Re: Re: Lunch?');
    assert.equal(lunch.thread!.unread, 3);
    assert.equal(threads.rows[0]!.subject, 'Spring offers');
  });

  test(
    'the messages of a move on its way left out, places counted without them',
    { timeout: 30_000 },
    async () => {
      const all = (await list(alice, { limit: 50 })).rows.map((r) => r.uid);
      const gone = [all[1]!, all[12]!];
      const left = all.filter((u) => !gone.includes(u));
      for (const offset of [0, 10, 20]) {
        const page = await list(alice, { limit: 10, offset, exclude: gone.join(',') });
        assert.equal(page.total, 22);
        assert.deepEqual(
          page.rows.map((r) => r.uid),
          left.slice(offset, offset + 10),
          `from ${offset}`,
        );
      }
      // sorted or searched on the server, and by conversation, alike
      const bySubject = async (exclude?: number) =>
        (await list(alice, { sort: 'subject', limit: 50, ...(exclude ? { exclude } : {}) })).rows.map(
          (r) => r.uid,
        );
      const sorted = await bySubject();
      assert.deepEqual(await bySubject(sorted[3]), [...sorted.slice(0, 3), ...sorted.slice(4)]);
      const threads = await list(alice, { threads: 1, limit: 50 });
      const single = threads.rows.find((r) => r.thread!.count === 1)!;
      const fewer = await list(alice, { threads: 1, limit: 50, exclude: single.uid });
      assert.equal(fewer.total, threads.total - 1);
      assert.ok(!fewer.rows.some((r) => r.uid === single.uid));
    },
  );

  test('bad list parameters are answered 400, naming the parameter', { timeout: 30_000 }, async () => {
    for (const [params, field] of [
      [{ limit: 1000 }, 'limit'],
      [{ limit: 0 }, 'limit'],
      [{ offset: -1 }, 'offset'],
      [{ sort: 'colour' }, 'sort'],
      [{ order: 'sideways' }, 'order'],
      [{ threads: 'maybe' }, 'threads'],
      [{ q: 'x'.repeat(600) }, 'q'],
      [{ q: 'pasted\u0000text' }, 'q'],
      [{ q: 'subject:\u0000', sort: 'date' }, 'q'],
      [{ q: 'a\u0000', threads: true }, 'q'],
      [{ exclude: '1,x' }, 'exclude'],
      [{ exclude: '0' }, 'exclude'],
    ] as const) {
      const res = await alice.get('/api/messages' + q({ folder: 'INBOX', ...params }));
      assert.equal(res.status, 400, JSON.stringify(params));
      assert.equal(res.json.error, 'bad_request');
      assert.match(res.json.message, new RegExp(`^${field}:`));
    }
    const noFolder = await alice.get('/api/messages');
    assert.deepEqual([noFolder.status, noFolder.json.error], [400, 'bad_request']);
  });
});

describe('folder names with path tricks', () => {
  test(
    'a folder that is not in the list is 404, and never reaches another mailbox',
    { timeout: 30_000 },
    async () => {
      for (const folder of [
        '../bob@example.test/INBOX',
        '../../example.test/bob',
        'INBOX/../../bob',
        '..',
        '.',
        '/etc/passwd',
        'INBOX/..',
        '*',
        '%',
        'Trash/../../../bob',
        '~bob/INBOX',
        '.Junk',
        'inbox ',
      ]) {
        const res = await alice.get('/api/messages' + q({ folder }));
        assert.deepEqual([res.status, res.json.error], [404, 'no_such_folder'], folder);
        const read = await alice.get('/api/messages/1' + q({ folder }));
        assert.equal(read.status, 404, folder);
        const move = await alice.post('/api/messages/move', { folder: 'INBOX', uids: [1], to: folder });
        assert.equal(move.status, 404, `move to ${folder}`);
      }
      for (const folder of ['INBOX\r\nA1 LOGOUT', 'x'.repeat(1001), 'INBOX\u0000']) {
        const res = await alice.get('/api/messages' + q({ folder }));
        assert.deepEqual([res.status, res.json.error], [400, 'bad_request'], JSON.stringify(folder));
      }
    },
  );
});

describe('reading', () => {
  test('a message: headers, text, attachments, policy reasons none', { timeout: 30_000 }, async () => {
    const uid = await uidOf('Spring offers');
    const res = await alice.get(`/api/messages/${uid}` + q({ folder: 'INBOX' }));
    assert.equal(res.status, 200, res.text);
    const m = res.json;
    assert.equal(m.subject, 'Spring offers');
    assert.deepEqual(m.from, [{ name: 'Shop', address: 'news@shop.example' }]);
    assert.equal(m.html, true);
    assert.match(m.text, /spring offers \(plain text\)/);
    assert.equal(m.listUnsubscribe, '<https://shop.example/unsubscribe?u=42>');
    assert.equal(m.policy, null);
    const names = (m.attachments as { filename: string; inline: boolean; type: string }[]).map(
      (a) => `${a.filename}:${a.type}:${a.inline}`,
    );
    assert.deepEqual(names.sort(), [
      'Grüße.txt:text/plain:false',
      'logo.png:image/png:true',
      'page.html:text/html:false',
      'report.pdf:application/pdf:false',
    ]);
    // remote images and backgrounds blocked, the pixel removed, the redirect unwrapped
    assert.deepEqual(m.privacy, { blocked: 3, trackers: 1, unwrapped: 1, remoteAllowed: false });
  });

  test(
    'the HTML body: sanitised, nothing remote, under its own strict CSP',
    { timeout: 30_000 },
    async () => {
      const uid = await uidOf('Spring offers');
      const res = await alice.get(`/api/messages/${uid}/body` + q({ folder: 'INBOX' }));
      assert.equal(res.status, 200);
      assert.match(String(res.headers['content-type']), /^text\/html/);
      const csp = String(res.headers['content-security-policy']);
      assert.match(csp, /default-src 'none'/);
      assert.match(csp, /img-src data:;/);
      assert.match(csp, /sandbox/);
      assert.doesNotMatch(csp, /script-src/);
      const html = res.text;
      assert.ok(!html.includes('127.0.0.5'), 'no remote address anywhere in the document');
      assert.ok(!/<script|javascript:|onerror|<form|<iframe|<input/i.test(html), html);
      assert.match(html, /<b>reader<\/b>/);
      assert.match(html, /href="https:\/\/shop\.example\/spring-sale"/);
      assert.match(html, /src="data:image\/png;base64,/, 'the inline logo as a data: URI');
      assert.match(html, /alt="Our banner"/);
      // allowed for this message: the banner loads, the pixel still does not
      const remote = await alice.get(`/api/messages/${uid}/body` + q({ folder: 'INBOX', remote: 1 }));
      assert.match(String(remote.headers['content-security-policy']), /img-src data: https: http:/);
      assert.ok(remote.text.includes(`${REMOTE}/banner.png`));
      assert.ok(!remote.text.includes('open.gif'), 'tracking pixels stay out');
    },
  );

  test('remote content for a sender: allowed, then withdrawn', { timeout: 30_000 }, async () => {
    const uid = await uidOf('Spring offers');
    const allow = await alice.post('/api/remote-senders', { address: 'News@Shop.example', allow: true });
    assert.equal(allow.status, 200);
    const m = await alice.get(`/api/messages/${uid}` + q({ folder: 'INBOX' }));
    assert.equal(m.json.privacy.remoteAllowed, true);
    assert.ok(
      (await alice.get(`/api/messages/${uid}/body` + q({ folder: 'INBOX' }))).text.includes('banner.png'),
    );
    // another user's choice is their own
    const bobView = await bob.post('/api/remote-senders', { address: 'nope', allow: true });
    assert.equal(bobView.status, 400);
    await alice.post('/api/remote-senders', { address: 'news@shop.example', allow: false });
    assert.ok(
      !(await alice.get(`/api/messages/${uid}/body` + q({ folder: 'INBOX' }))).text.includes('banner.png'),
    );
  });

  test('attachments download as files; only safe images show inline', { timeout: 30_000 }, async () => {
    const uid = await uidOf('Spring offers');
    const m = (await alice.get(`/api/messages/${uid}` + q({ folder: 'INBOX' }))).json;
    const part = (name: string) =>
      (m.attachments as { filename: string; part: string }[]).find((a) => a.filename === name)!.part;
    const pdf = await alice.get(`/api/messages/${uid}/parts/${part('report.pdf')}` + q({ folder: 'INBOX' }));
    assert.equal(pdf.status, 200);
    assert.equal(pdf.text, '%PDF-1.4 a small report');
    assert.equal(pdf.headers['content-type'], 'application/octet-stream');
    assert.equal(pdf.headers['content-disposition'], `attachment; filename*=UTF-8''report.pdf`);
    const umlaut = await alice.get(
      `/api/messages/${uid}/parts/${part('Grüße.txt')}` + q({ folder: 'INBOX' }),
    );
    assert.equal(umlaut.text, 'Grüße aus Köln');
    assert.match(String(umlaut.headers['content-disposition']), /filename\*=UTF-8''Gr%C3%BC%C3%9Fe\.txt/);
    // an HTML attachment is never rendered by the browser, even when asked inline
    const page = await alice.get(
      `/api/messages/${uid}/parts/${part('page.html')}` + q({ folder: 'INBOX', inline: 1 }),
    );
    assert.equal(page.headers['content-type'], 'application/octet-stream');
    assert.match(String(page.headers['content-disposition']), /^attachment/);
    const logo = await alice.get(
      `/api/messages/${uid}/parts/${part('logo.png')}` + q({ folder: 'INBOX', inline: 1 }),
    );
    assert.equal(logo.headers['content-type'], 'image/png');
    assert.equal(logo.body[1], 0x50, 'PNG bytes');
    // bad part numbers
    assert.equal((await alice.get(`/api/messages/${uid}/parts/9` + q({ folder: 'INBOX' }))).status, 404);
    assert.equal((await alice.get(`/api/messages/${uid}/parts/HEADER` + q({ folder: 'INBOX' }))).status, 400);
    assert.equal((await alice.get(`/api/messages/${uid}/parts/1.0` + q({ folder: 'INBOX' }))).status, 400);
    // the message body parts themselves are not attachments
    assert.equal((await alice.get(`/api/messages/${uid}/parts/1.1.1` + q({ folder: 'INBOX' }))).status, 404);
  });

  test(
    'an attachment is listed at the size of the file, not of its encoding',
    { timeout: 30_000 },
    async () => {
      const file = Buffer.alloc(57 * 200, 'a'); // 11,400 bytes: 15,600 in base64 lines
      const imap = await storeSession(t, BOB);
      await imap.append(
        'Trash',
        withAttachment('Sized attachment', [
          'Content-Type: application/octet-stream; name="data.bin"',
          'Content-Disposition: attachment; filename="data.bin"',
          'Content-Transfer-Encoding: base64',
          '',
          file.toString('base64').replace(/.{76}/g, '$&\r\n').trimEnd(),
        ]),
      );
      await imap.logout();
      const { rows } = (await bob.get('/api/messages' + q({ folder: 'Trash', limit: 200 }))).json as {
        rows: { uid: number; subject: string }[];
      };
      const uid = rows.find((r) => r.subject === 'Sized attachment')!.uid;
      const m = (await bob.get(`/api/messages/${uid}` + q({ folder: 'Trash' }))).json;
      const [att] = m.attachments as { filename: string; size: number }[];
      assert.equal(att!.filename, 'data.bin');
      assert.ok(Math.abs(att!.size - file.length) <= file.length / 100, `${att!.size} bytes listed`);
    },
  );

  test('invalid and unknown message ids', { timeout: 30_000 }, async () => {
    for (const id of ['0', '-1', 'abc', '1.5', '99999999999', '1e3', '%00']) {
      const res = await alice.get(`/api/messages/${id}` + q({ folder: 'INBOX' }));
      assert.deepEqual([res.status, res.json.error], [400, 'bad_request'], id);
    }
    const res = await alice.get('/api/messages/424242' + q({ folder: 'INBOX' }));
    assert.deepEqual([res.status, res.json.error], [404, 'no_such_message']);
    for (const path of [
      '/api/messages/424242/body',
      '/api/messages/424242/parts/2',
      '/api/messages/424242/draft',
    ]) {
      assert.equal((await alice.get(path + q({ folder: 'INBOX' }))).status, 404, path);
    }
  });

  test("another user's message id reaches only the user's own mailbox", { timeout: 30_000 }, async () => {
    const bobs = await list(bob, {});
    const bobUid = bobs.rows.find((r) => r.subject === 'for bob only')!.uid;
    // bob has one message, uid 1; alice's uid 1 is her own first message, never bob's
    const res = await alice.get(`/api/messages/${bobUid}` + q({ folder: 'INBOX' }));
    assert.equal(res.status, 200);
    assert.notEqual(res.json.subject, 'for bob only');
    assert.ok(!res.text.includes('bob-secret-text'));
    // and bob, asking for alice's higher ids, gets nothing at all
    const spring = await uidOf('Spring offers');
    const none = await bob.get(`/api/messages/${spring}` + q({ folder: 'INBOX' }));
    assert.deepEqual([none.status, none.json.error], [404, 'no_such_message']);
    const flag = await bob.post('/api/messages/flags', { folder: 'INBOX', uids: [spring], add: ['flagged'] });
    assert.equal(flag.status, 404);
    const del = await bob.post('/api/messages/delete', { folder: 'INBOX', uids: [spring] });
    assert.equal(del.status, 404);
    assert.equal(
      (await alice.get(`/api/messages/${spring}` + q({ folder: 'INBOX' }))).status,
      200,
      'still there',
    );
  });
});

describe('actions', () => {
  test('read/unread and flag', { timeout: 30_000 }, async () => {
    const uid = await uidOf('apple 01');
    let res = await alice.post('/api/messages/flags', {
      folder: 'INBOX',
      uids: [uid],
      add: ['seen', 'flagged'],
    });
    assert.deepEqual(res.json, { uids: [uid], skipped: [] });
    let m = (await alice.get(`/api/messages/${uid}` + q({ folder: 'INBOX' }))).json;
    assert.deepEqual([m.flags.seen, m.flags.flagged], [true, true]);
    assert.equal((await list(alice, { flagged: 1 })).total, 1);
    res = await alice.post('/api/messages/flags', { folder: 'INBOX', uids: [uid], remove: ['seen'] });
    m = (await alice.get(`/api/messages/${uid}` + q({ folder: 'INBOX' }))).json;
    assert.deepEqual([m.flags.seen, m.flags.flagged], [false, true]);
    // only the flags a user sets
    const bad = await alice.post('/api/messages/flags', { folder: 'INBOX', uids: [uid], add: ['\\Deleted'] });
    assert.equal(bad.status, 400);
    assert.equal(
      (await alice.post('/api/messages/flags', { folder: 'INBOX', uids: [], add: ['seen'] })).status,
      400,
    );
    assert.equal(
      (await alice.post('/api/messages/flags', { folder: 'INBOX', uids: 'all', add: ['seen'] })).status,
      400,
    );
  });

  test('move, archive, delete to Trash, delete from Trash for good', { timeout: 30_000 }, async () => {
    const a = await uidOf('apple 05');
    const moved = await alice.post('/api/messages/move', { folder: 'INBOX', uids: [a], to: 'Archive' });
    assert.equal(moved.status, 200, moved.text);
    assert.equal(moved.json.to, 'Archive');
    const inArchive = await uidOf('apple 05', 'Archive');
    const b = await uidOf('apple 09');
    assert.equal((await alice.post('/api/messages/archive', { folder: 'INBOX', uids: [b] })).status, 200);
    await uidOf('apple 09', 'Archive');
    assert.equal(
      (await alice.post('/api/messages/delete', { folder: 'Archive', uids: [inArchive] })).status,
      200,
    );
    const inTrash = await uidOf('apple 05', 'Trash');
    const gone = await alice.post('/api/messages/delete', { folder: 'Trash', uids: [inTrash] });
    assert.equal(gone.json.deleted, true);
    assert.equal((await alice.get('/api/messages' + q({ folder: 'Trash' }))).json.total, 0);
    // ids that are not there (any more)
    assert.equal(
      (await alice.post('/api/messages/move', { folder: 'INBOX', uids: [a], to: 'Archive' })).status,
      404,
    );
  });

  test('spam moves to Junk and trains the filter; not spam moves back', { timeout: 30_000 }, async () => {
    const bus = new Bus({ url: t.p.vhost.url, logger: createLogger('test', 'silent'), name: 'test-learn' });
    bus.start();
    await bus.waitConnected();
    const events: { key: string; account: string }[] = [];
    await bus.subscribe('learn.*', (payload, key) => {
      events.push({ key, account: (payload as { account: string }).account });
    });
    try {
      const uid = await uidOf('durian 03');
      const res = await alice.post('/api/messages/spam', { folder: 'INBOX', uids: [uid], spam: true });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.to, 'Junk');
      const junkUid = await uidOf('durian 03', 'Junk');
      const m = (await alice.get(`/api/messages/${junkUid}` + q({ folder: 'Junk' }))).json;
      assert.equal(m.flags.junk, true, 'marked $Junk');
      await waitFor(() => events.some((e) => e.key === EventKeys.learnSpam), { what: 'learn.spam' });
      assert.equal(events[0]!.account, ALICE);
      const back = await alice.post('/api/messages/spam', { folder: 'Junk', uids: [junkUid], spam: false });
      assert.equal(back.json.to, 'INBOX');
      await waitFor(() => events.some((e) => e.key === EventKeys.learnHam), { what: 'learn.ham' });
      const again = await uidOf('durian 03');
      assert.equal(
        (await alice.get(`/api/messages/${again}` + q({ folder: 'INBOX' }))).json.flags.junk,
        false,
      );
      assert.equal((await alice.post('/api/messages/spam', { folder: 'INBOX', uids: [again] })).status, 400);
    } finally {
      await bus.stop();
    }
  });

  test('the policy reasons a message in Junk carries are shown', { timeout: 30_000 }, async () => {
    // filed into Junk the way delivery does for a quarantine verdict (the policy header on top)
    const imap = await storeSession(t, ALICE);
    await imap.append(
      'Junk',
      plainMessage({
        subject: 'You won',
        extra: [
          'X-Mailyard-Policy: junk; rspamd=spam (score 14.2, BAYES_SPAM); spf=fail (192.0.2.7 not permitted); dmarc=none',
        ],
      }),
    );
    await imap.logout();
    const uid = await uidOf('You won', 'Junk');
    const m = (await alice.get(`/api/messages/${uid}` + q({ folder: 'Junk' }))).json;
    assert.deepEqual(m.policy, {
      verdict: 'junk',
      reasons: [
        { check: 'rspamd', result: 'spam', detail: 'score 14.2, BAYES_SPAM' },
        { check: 'spf', result: 'fail', detail: '192.0.2.7 not permitted' },
        { check: 'dmarc', result: 'none', detail: null },
      ],
    });
  });
});

describe('changes the store refuses', () => {
  test(
    'a mailbox over its quota can still be cleaned up: delete, archive, move and spam work',
    { timeout: 30_000 },
    async () => {
      // an account of its own, its mail delivered before its quota shrank below its use
      const FULL = 'full-mail@example.test';
      await addAccount(t.p.directory, FULL);
      for (const subject of ['One', 'Two', 'Three', 'Four'])
        await sendRaw(t.p, FULL, plainMessage({ subject, to: FULL }));
      await new Quotas(t.p.redis.redis, 0).set(FULL, 1);
      const c = new WebClient(t.webmail.port, t.ca);
      assert.equal((await c.login(FULL)).status, 200);
      const rows = (await c.get('/api/messages' + q({ folder: 'INBOX' }))).json.rows as { uid: number }[];
      assert.equal(rows.length, 4);
      // a move leaves the usage as it was: the store does not refuse it (RFC 9208 §5.1 is
      // about what adds to it)
      const uids = rows.map((r) => r.uid);
      for (const [i, [path, body]] of [
        ['/api/messages/delete', { folder: 'INBOX' }],
        ['/api/messages/archive', { folder: 'INBOX' }],
        ['/api/messages/move', { folder: 'INBOX', to: 'Trash' }],
        ['/api/messages/spam', { folder: 'INBOX', spam: true }],
      ].entries() as Iterable<[number, [string, Record<string, unknown>]]>) {
        const res = await c.post(path, { ...body, uids: [uids[i]] });
        assert.equal(res.status, 200, `${path}: ${res.text}`);
      }
      assert.equal((await c.get('/api/messages' + q({ folder: 'INBOX' }))).json.total, 0);
      assert.equal((await c.get('/api/messages' + q({ folder: 'Trash' }))).json.total, 2);
    },
  );

  test('a move into a folder deleted meanwhile says so, not "moved"', { timeout: 30_000 }, async () => {
    const ACC = 'gone-folder@example.test';
    await addAccount(t.p.directory, ACC);
    await sendRaw(t.p, ACC, plainMessage({ subject: 'Stay', to: ACC }));
    const imap = await storeSession(t, ACC);
    await imap.mailboxCreate('Gone');
    const c = new WebClient(t.webmail.port, t.ca);
    assert.equal((await c.login(ACC)).status, 200);
    const [row] = (await c.get('/api/messages' + q({ folder: 'INBOX' }))).json.rows as { uid: number }[];
    // the folder goes from another client: the webmail's list of folders still has it
    await imap.mailboxDelete('Gone');
    await imap.logout();
    const res = await c.post('/api/messages/move', { folder: 'INBOX', uids: [row!.uid], to: 'Gone' });
    assert.equal(res.status, 404, res.text);
    const inbox = (await c.get('/api/messages' + q({ folder: 'INBOX' }))).json;
    assert.deepEqual(
      (inbox.rows as { uid: number }[]).map((r) => r.uid),
      [row!.uid],
    );
  });
});

describe('dates that are no dates', () => {
  test(
    'a Date header that is no date: listed and opened with the arrival date',
    { timeout: 30_000 },
    async () => {
      // a sender writes what it likes in Date:; the store keeps when the message arrived
      const arrived = new Date('2025-03-04T05:06:07.000Z');
      const imap = await storeSession(t, BOB);
      for (const date of ['not a date at all', 'Mon, 45 Foo 2025 99:99:99 +0000'])
        await imap.append('Archive', plainMessage({ subject: `Dated ${date}`, to: BOB, date }), [], arrived);
      await imap.logout();
      for (const sort of ['arrival', 'date'])
        for (const threads of [false, true]) {
          const res = await bob.get('/api/messages' + q({ folder: 'Archive', sort, threads }));
          assert.equal(res.status, 200, `sort=${sort} threads=${threads}: ${res.text}`);
          const rows = res.json.rows as { uid: number; subject: string; date: string }[];
          assert.equal(rows.length, 2);
          for (const r of rows) assert.equal(r.date, arrived.toISOString(), r.subject);
        }
      const rows = (await bob.get('/api/messages' + q({ folder: 'Archive' }))).json.rows as { uid: number }[];
      for (const { uid } of rows) {
        const m = await bob.get(`/api/messages/${uid}` + q({ folder: 'Archive' }));
        assert.equal(m.status, 200, m.text);
        assert.equal(m.json.date, arrived.toISOString());
        assert.equal((await bob.get(`/api/messages/${uid}/draft` + q({ folder: 'Archive' }))).status, 200);
      }
    },
  );
});

describe('attachment names that are no text', () => {
  test('a name that decodes to half a character downloads all the same', { timeout: 30_000 }, async () => {
    // =?UTF-16BE?B?2D0AYQ==?= is U+D83D, the first half of a pair with no second, then "a"
    const raw = withAttachment('Half a character', [
      'Content-Type: application/octet-stream; name="=?UTF-16BE?B?2D0AYQ==?="',
      'Content-Disposition: attachment',
      'Content-Transfer-Encoding: base64',
      '',
      Buffer.from('the attachment').toString('base64'),
    ]);
    const imap = await storeSession(t, BOB);
    await imap.append('Junk', raw);
    await imap.logout();
    const { rows } = (await bob.get('/api/messages' + q({ folder: 'Junk' }))).json as {
      rows: { uid: number; subject: string }[];
    };
    const uid = rows.find((r) => r.subject === 'Half a character')!.uid;
    const file = await bob.get(`/api/messages/${uid}/parts/2` + q({ folder: 'Junk' }));
    assert.equal(file.status, 200, file.text);
    assert.equal(file.text, 'the attachment');
    assert.equal(file.headers['content-disposition'], "attachment; filename*=UTF-8''%EF%BF%BDa");
    const m = await bob.get(`/api/messages/${uid}` + q({ folder: 'Junk' }));
    assert.equal(m.status, 200, m.text);
    assert.deepEqual(
      (m.json.attachments as { part: string; filename: string }[]).map((a) => [a.part, a.filename]),
      [['2', '\uFFFDa']],
    );
  });
});

describe('text that names no charset', () => {
  test(
    'read as a browser reads it: the HTML by its <meta charset>, else UTF-8 or windows-1252',
    { timeout: 30_000 },
    async () => {
      const message = (subject: string, type: string, body: string) =>
        Buffer.from(
          [
            'From: <sender@remote.example>',
            `To: ${BOB}`,
            `Subject: ${subject}`,
            'Date: Mon, 6 Jan 2025 10:00:00 +0000',
            'MIME-Version: 1.0',
            `Content-Type: ${type}`,
            'Content-Transfer-Encoding: 8bit',
            '',
            body,
            '',
          ].join('\r\n'),
          'latin1',
        );
      const imap = await storeSession(t, BOB);
      // bytes of windows-1252 (é, €, curly quotes) in a part with no charset, and one that says US-ASCII
      await imap.append('Trash', message('Unlabelled', 'text/plain', 'Caf\xe9 \x80 5 \x93ok\x94'));
      await imap.append('Trash', message('Said ASCII', 'text/plain; charset=us-ascii', 'Caf\xe9'));
      // KOI8-R named by the document only
      await imap.append(
        'Trash',
        message(
          'Meta charset',
          'text/html',
          '<html><head><meta http-equiv="Content-Type" content="text/html; charset=koi8-r"></head>' +
            '<body><p>\xf0\xd2\xc9\xd7\xc5\xd4</p></body></html>',
        ),
      );
      await imap.logout();
      const { rows } = (await bob.get('/api/messages' + q({ folder: 'Trash', limit: 200 }))).json as {
        rows: { uid: number; subject: string }[];
      };
      const open = async (subject: string) => {
        const uid = rows.find((r) => r.subject === subject)!.uid;
        const m = await bob.get(`/api/messages/${uid}` + q({ folder: 'Trash' }));
        assert.equal(m.status, 200, m.text);
        const body = await bob.get(`/api/messages/${uid}/body` + q({ folder: 'Trash' }));
        assert.equal(body.status, 200, body.text);
        return { text: m.json.text as string, body: body.text };
      };
      const unlabelled = await open('Unlabelled');
      assert.equal(unlabelled.text.trim(), 'Café € 5 “ok”');
      assert.match(unlabelled.body, /Café € 5 “ok”/);
      assert.equal((await open('Said ASCII')).text.trim(), 'Café');
      const meta = await open('Meta charset');
      assert.equal(meta.text, 'Привет');
      assert.match(meta.body, /<p>Привет<\/p>/);
    },
  );
});

describe('a multipart with no boundary', () => {
  test('its text is shown as it stands, at the top or inside another', { timeout: 30_000 }, async () => {
    const message = (subject: string, type: string, body: string[]) =>
      [
        'From: <sender@remote.example>',
        `To: ${BOB}`,
        `Subject: ${subject}`,
        'MIME-Version: 1.0',
        `Content-Type: ${type}`,
        '',
        ...body,
        '',
      ].join('\r\n');
    const imap = await storeSession(t, BOB);
    // no parts can be told apart: the store lists one empty part, as Dovecot does
    await imap.append(
      'Sent',
      message('Unbounded', 'multipart/mixed', [
        '--frontier',
        'Content-Type: text/plain',
        '',
        'Grüße, and the text a reader must still see.',
        '--frontier--',
      ]),
    );
    await imap.append(
      'Sent',
      message('Unbounded inside', 'multipart/mixed; boundary="outer"', [
        '--outer',
        'Content-Type: text/plain',
        '',
        'first part',
        '--outer',
        'Content-Type: multipart/alternative',
        '',
        'the inner text',
        '--outer--',
      ]),
    );
    await imap.logout();
    const { rows } = (await bob.get('/api/messages' + q({ folder: 'Sent' }))).json as {
      rows: { uid: number; subject: string }[];
    };
    const text = async (subject: string) => {
      const uid = rows.find((r) => r.subject === subject)!.uid;
      const m = await bob.get(`/api/messages/${uid}` + q({ folder: 'Sent' }));
      assert.equal(m.status, 200, m.text);
      // and in the frame the reader shows
      const body = await bob.get(`/api/messages/${uid}/body` + q({ folder: 'Sent' }));
      assert.match(body.text, subject === 'Unbounded' ? /Grüße, and the text/ : /the inner text/);
      return m.json.text as string;
    };
    assert.match(
      await text('Unbounded'),
      /^--frontier\r?\nContent-Type: text\/plain\r?\n\r?\nGrüße, and the text/,
    );
    const inside = await text('Unbounded inside');
    assert.match(inside, /^first part/);
    assert.match(inside, /the inner text/);
  });
});

describe('new mail without reload', () => {
  test('the event stream announces a delivery within moments', { timeout: 30_000 }, async () => {
    const stream = await openEvents(alice, t.ca);
    try {
      assert.equal(stream.status, 200);
      await waitFor(() => stream.events.some((e) => e.event === 'ready'), { what: 'ready' });
      await waitFor(() => t.webmail.watching(ALICE), { what: 'the IDLE session' });
      const before = (await list(alice, {})).total;
      await sendRaw(t.p, ALICE, plainMessage({ subject: 'pushed' }));
      await waitFor(() => stream.events.find((e) => e.event === 'new'), { what: 'a new-mail event' });
      const ev = stream.events.find((e) => e.event === 'new')!;
      assert.equal(ev.data.folder, 'INBOX');
      assert.ok(ev.data.count > before);
    } finally {
      stream.close();
    }
  });
});
