// Writing mail through the API: identities, uploads (and their limit), drafts, sending
// through the msa as the user (never as someone else), the copy in Sent.
import assert from 'node:assert/strict';
import { Quotas } from '@mailyard/mailstore';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import type { ClientRequest } from 'node:http';
import { request } from 'node:https';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { WebmailKeys } from '@mailyard/admin';
import {
  interleavedRedis,
  startPrivateRabbit,
  startTcpProxy,
  waitFor,
  type TcpProxy,
} from '@mailyard/testkit';
import { sendRaw } from '../../retrieval/test/helpers.js';
import { addAccount } from '../../../test/harness.js';
import { loggedIn, webmailFile } from './file-setup.js';
import { storeSession } from './mail-clients.js';
import { newsletter, plainMessage } from './messages.js';
import { ALICE, BOB, HOST, webmailOnStallableImap, type WebmailTestbed } from './webmail-harness.js';
import { WebClient, q } from './web-client.js';

/** SEND_TIMEOUT of the webmails whose mail server or store stops answering. */
const SEND_MS = 2000;
/**
 * Beyond it: a busy machine (three test files and their services on two cores), never an
 * upstream's own timeout (15 s, 30 s): an answer that early can only come from SEND_TIMEOUT.
 */
const MARGIN_MS = 8000;

let t: WebmailTestbed;
let alice: WebClient;

/** Alice, logged in to a webmail of its own that sends through `port`, at most for SEND_MS. */
const aliceSendingThrough = async (port: number): Promise<WebClient> => {
  const w = await t.another({ submission_server: `127.0.0.1:${port}`, send_timeout: `${SEND_MS}ms` });
  return loggedIn(t, ALICE, w.port);
};

webmailFile({}, async (f) => {
  t = f.t;
  await t.p.directory.addAlias('team@example.test', [ALICE, BOB]);
  await sendRaw(
    t.p,
    ALICE,
    plainMessage({ subject: 'Question', from: `"Bob" <${BOB}>`, messageId: '<q1@example.test>' }),
  );
  await sendRaw(t.p, ALICE, newsletter('http://127.0.0.5:1'));
  alice = await loggedIn(t, ALICE);
});

const upload = (c: WebClient, name: string, data: Buffer, type = 'application/octet-stream') =>
  c.req('POST', '/api/uploads', {
    body: data,
    headers: {
      'content-type': 'application/octet-stream',
      'x-filename': encodeURIComponent(name),
      'x-content-type': type,
    },
  });
const messagesIn = async (folder: string) =>
  (await alice.get('/api/messages' + q({ folder, limit: 200 }))).json.rows as {
    uid: number;
    subject: string;
    flags: Record<string, boolean>;
  }[];
const bobsMail = (subject: string) =>
  waitFor(
    () =>
      t.p
        .inbox(BOB)
        .map((f) => readFileSync(f, 'utf8'))
        .find((m) => m.includes(`Subject: ${subject}`)),
    {
      what: `"${subject}" in bob's mailbox`,
    },
  );

const draft = (extra: Record<string, unknown> = {}) => ({
  from: ALICE,
  to: `"Bob" <${BOB}>`,
  subject: 'Hello',
  text: 'Hi Bob',
  ...extra,
});

describe('identities', () => {
  test("the account's addresses and its aliases", { timeout: 30_000 }, async () => {
    const res = await alice.get('/api/identities');
    assert.equal(res.status, 200);
    assert.deepEqual(res.json.identities, [{ address: ALICE }, { address: 'team@example.test' }]);
    assert.equal(res.json.primary, ALICE);
  });
});

describe('uploads', () => {
  test('a file is kept until sent; its name and type come back', { timeout: 30_000 }, async () => {
    const res = await upload(alice, 'Übersicht 2025.pdf', Buffer.from('%PDF-1.4'), 'application/pdf');
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(
      [res.json.filename, res.json.type, res.json.size],
      ['Übersicht 2025.pdf', 'application/pdf', 8],
    );
    assert.match(res.json.id, /^[\w-]{22}$/);
    assert.equal((await alice.req('DELETE', `/api/uploads/${res.json.id}`)).status, 200);
    assert.equal((await alice.req('DELETE', `/api/uploads/${res.json.id}`)).status, 404);
    assert.equal((await alice.req('DELETE', '/api/uploads/../../etc')).status, 404);
    assert.equal((await alice.req('DELETE', '/api/uploads/short')).status, 400);
  });

  test(
    'bad names are cleaned or refused; an odd type becomes application/octet-stream',
    { timeout: 30_000 },
    async () => {
      const res = await upload(
        alice,
        '../../etc/passwd\r\n',
        Buffer.from('x'),
        'text/html; charset=utf-8<script>',
      );
      assert.equal(res.json.filename, '.._.._etc_passwd__');
      assert.equal(res.json.type, 'application/octet-stream');
      const bad = await alice.req('POST', '/api/uploads', {
        body: Buffer.from('x'),
        headers: { 'content-type': 'application/octet-stream', 'x-filename': '%E0%A4%A' },
      });
      assert.deepEqual([bad.status, bad.json.error], [400, 'bad_request']);
    },
  );

  test('an upload over the limit is refused with the limit in the answer', { timeout: 60_000 }, async () => {
    const small = await t.another({ message_size_limit: '1M' });
    const c = new WebClient(small.port, t.ca);
    const session = await c.login(ALICE);
    const limit = session.json.limits.attachments as number;
    assert.ok(limit > 500_000 && limit < 600_000, String(limit));
    const res = await upload(c, 'big.bin', Buffer.alloc(limit + 1));
    assert.deepEqual([res.status, res.json.error, res.json.limit], [413, 'too_large', limit]);
    assert.match(res.json.message, /at most 5\d\d KB/);
    // each under the limit, together over it: the message is refused
    const a = await upload(c, 'a.bin', Buffer.alloc(Math.floor(limit * 0.6)));
    const b = await upload(c, 'b.bin', Buffer.alloc(Math.floor(limit * 0.6)));
    assert.equal(a.status, 200);
    const send = await c.post(
      '/api/send',
      draft({ attachments: [{ upload: a.json.id }, { upload: b.json.id }] }),
    );
    assert.deepEqual([send.status, send.json.error], [413, 'too_large']);
  });

  test(
    'one file named a hundred times is refused before any of it is loaded',
    { timeout: 60_000 },
    async () => {
      // the default limit: a 2 MB file a hundred times would be 200 MB held at once
      const file = await upload(alice, 'twice.bin', Buffer.alloc(2 << 20, 1));
      assert.equal(file.status, 200);
      let peak = 0;
      const base = process.memoryUsage().arrayBuffers;
      const sample = setInterval(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers - base)), 2);
      try {
        const send = await alice.post(
          '/api/send',
          draft({ attachments: Array.from({ length: 100 }, () => ({ upload: file.json.id })) }),
        );
        assert.deepEqual([send.status, send.json.error], [413, 'too_large']);
      } finally {
        clearInterval(sample);
      }
      assert.ok(peak < 50 << 20, `${Math.round(peak / 2 ** 20)} MB held while refusing it`);
    },
  );

  test(
    'the uploads an account has waiting have a cap; removing or sending them frees it',
    { timeout: 60_000 },
    async () => {
      const small = await t.another({ message_size_limit: '1M' });
      const c = new WebClient(small.port, t.ca);
      const limit = (await c.login(BOB)).json.limits.attachments as number;
      const file = Buffer.alloc(limit - 1000, 7);
      const ids: string[] = [];
      // ten attachment limits wait at most
      for (let i = 0; i < 10; i++) {
        const up = await upload(c, `f${i}.bin`, file);
        assert.equal(up.status, 200, up.text);
        ids.push(up.json.id as string);
      }
      const over = await upload(c, 'one-more.bin', file);
      assert.deepEqual([over.status, over.json.error], [413, 'too_many_uploads']);
      assert.match(over.json.message, /send or remove some first/);
      assert.equal((await c.req('DELETE', `/api/uploads/${ids.pop()}`)).status, 200);
      const again = await upload(c, 'again.bin', file);
      assert.equal(again.status, 200, again.text);
      ids.push(again.json.id as string);
      assert.equal((await upload(c, 'full.bin', file)).status, 413);
      // saved into a draft, as the editor does a moment after each upload: kept there
      const saved = await c.req('PUT', '/api/drafts', {
        json: draft({ from: BOB, attachments: [{ upload: ids[1]! }] }),
      });
      assert.equal(saved.json.attachments.length, 1, saved.text);
      const afterDraft = await upload(c, 'after-draft.bin', file);
      assert.equal(afterDraft.status, 200, afterDraft.text);
      assert.equal((await upload(c, 'full-again.bin', file)).status, 413);
      // sent: the upload is in the message, and its room free
      const sent = await c.post('/api/send', draft({ from: BOB, attachments: [{ upload: ids[0]! }] }));
      assert.equal(sent.status, 200, sent.text);
      assert.equal((await upload(c, 'after-send.bin', file)).status, 200);
    },
  );
});

test('an upload whose client went away before the answer is not kept', { timeout: 30_000 }, async () => {
  // the client goes (a draft discarded, a tab closed) while the upload is being stored:
  // it never learns the id, and nothing could ever name the upload again
  const sending: { upload?: ClientRequest } = {};
  let gone = false;
  const serverSockets: TLSSocket[] = [];
  const w = await t.another(
    {},
    {
      redis: interleavedRedis(
        t.p.redis.redis,
        (command) => command === 'webmailStoreUpload',
        async () => {
          const port = sending.upload!.socket!.localPort;
          sending.upload!.destroy();
          await waitFor(() => serverSockets.find((s) => s.remotePort === port)?.destroyed, {
            what: 'the webmail seeing the client gone',
          });
          gone = true;
        },
      ),
    },
    (webmail) => webmail.app.server.on('secureConnection', (s: TLSSocket) => serverSockets.push(s)),
  );
  const c = new WebClient(w.port, t.ca);
  await c.login(ALICE);
  const waiting = async () => (await t.p.redis.redis.zrange(WebmailKeys.uploads(ALICE), 0, -1)).join(' ');
  const before = await waiting();
  const upload = (sending.upload = request({
    host: '127.0.0.1',
    port: w.port,
    servername: HOST,
    ca: t.ca,
    agent: false,
    method: 'POST',
    path: '/api/uploads',
    headers: {
      'x-forwarded-for': c.ip,
      cookie: [...c.cookies].map(([k, v]) => `${k}=${v}`).join('; '),
      'x-csrf-token': c.csrf,
      'content-type': 'application/octet-stream',
      'x-filename': 'notes.txt',
    },
  }));
  upload.on('error', () => undefined);
  upload.end(Buffer.alloc(10_000, 1));
  await waitFor(() => gone, { what: 'the client gone while the upload was stored' });
  await waitFor(async () => (await waiting()) === before, { what: 'the upload removed' });
});

describe('drafts', () => {
  test(
    'a draft reopened with its attachments can be saved again and again, and sent',
    { timeout: 30_000 },
    async () => {
      const up = await upload(alice, 'plan.txt', Buffer.from('the plan'), 'text/plain');
      let saved = await alice.req('PUT', '/api/drafts', {
        json: draft({ subject: 'Reopened', attachments: [{ upload: up.json.id }] }),
      });
      assert.equal(saved.status, 200, saved.text);
      // as the editor does after each save: the attachments named as parts of the new draft
      for (let i = 0; i < 3; i++) {
        const parts = saved.json.attachments as { folder: string; uid: number; part: string }[];
        assert.deepEqual(
          parts.map((a) => [a.folder, a.uid]),
          [['Drafts', saved.json.uid]],
        );
        saved = await alice.req('PUT', '/api/drafts', {
          json: draft({ subject: `Reopened ${i}`, attachments: parts, draftUid: saved.json.uid }),
        });
        assert.equal(saved.status, 200, saved.text);
      }
      const sent = await alice.post(
        '/api/send',
        draft({ subject: 'Reopened, sent', attachments: saved.json.attachments, draftUid: saved.json.uid }),
      );
      assert.equal(sent.status, 200, sent.text);
    },
  );

  test(
    'the same draft saved from two windows: the second is told, and no second draft appears',
    { timeout: 30_000 },
    async () => {
      const first = await alice.req('PUT', '/api/drafts', { json: draft({ subject: 'Two windows' }) });
      assert.equal(first.status, 200, first.text);
      // both windows opened it; one saves, then the other, each replacing the draft it knew
      const a = await alice.req('PUT', '/api/drafts', {
        json: draft({ subject: 'Two windows', text: 'From window A', draftUid: first.json.uid }),
      });
      assert.equal(a.status, 200, a.text);
      const b = await alice.req('PUT', '/api/drafts', {
        json: draft({ subject: 'Two windows', text: 'From window B', draftUid: first.json.uid }),
      });
      assert.deepEqual([b.status, b.json.error], [409, 'draft_changed'], b.text);
      assert.match(b.json.message, /changed or discarded in another window/);
      const kept = (await messagesIn('Drafts')).filter((m) => m.subject === 'Two windows');
      assert.deepEqual(
        kept.map((m) => m.uid),
        [a.json.uid],
      );
      // the tests after this one find Drafts as they left it
      assert.equal((await alice.req('DELETE', `/api/drafts/${a.json.uid}`)).status, 200);
    },
  );

  test(
    'a save while another window is saving the same draft: told to save again, not that it is gone',
    { timeout: 30_000 },
    async () => {
      const first = await alice.req('PUT', '/api/drafts', { json: draft({ subject: 'Saved meanwhile' }) });
      assert.equal(first.status, 200, first.text);
      // window A's save is replacing the draft right now
      const marker = WebmailKeys.draftReplacing(ALICE, first.json.uid);
      await t.p.redis.redis.set(marker, '1', 'EX', 60);
      const b = await alice.req('PUT', '/api/drafts', {
        json: draft({ subject: 'Saved meanwhile', text: 'From window B', draftUid: first.json.uid }),
      });
      assert.deepEqual([b.status, b.json.error, b.headers['retry-after']], [503, 'draft_busy', '2'], b.text);
      // window A's save failed and let go: B's next save replaces the draft, no second one
      await t.p.redis.redis.del(marker);
      const again = await alice.req('PUT', '/api/drafts', {
        json: draft({ subject: 'Saved meanwhile', text: 'From window B', draftUid: first.json.uid }),
      });
      assert.equal(again.status, 200, again.text);
      const kept = (await messagesIn('Drafts')).filter((m) => m.subject === 'Saved meanwhile');
      assert.deepEqual(
        kept.map((m) => m.uid),
        [again.json.uid],
      );
      assert.equal((await alice.req('DELETE', `/api/drafts/${again.json.uid}`)).status, 200);
    },
  );

  test(
    'a full mailbox: the save says so (507), not "something went wrong"',
    { timeout: 30_000 },
    async () => {
      // an account of its own: the store reads a quota when a session first needs it
      const FULL = 'full@example.test';
      await addAccount(t.p.directory, FULL);
      await new Quotas(t.p.redis.redis, 0).set(FULL, 1);
      const c = new WebClient(t.webmail.port, t.ca);
      assert.equal((await c.login(FULL)).status, 200);
      const res = await c.req('PUT', '/api/drafts', { json: draft({ from: FULL, subject: 'No room' }) });
      assert.deepEqual([res.status, res.json.error], [507, 'over_quota'], res.text);
      assert.match(res.json.message, /mailbox is full/);
    },
  );

  test('saved, replaced while typing, read back, discarded', { timeout: 30_000 }, async () => {
    const up = await upload(alice, 'notes.txt', Buffer.from('some notes'), 'text/plain');
    const first = await alice.req('PUT', '/api/drafts', {
      json: draft({ subject: 'Draft 1', attachments: [{ upload: up.json.id }] }),
    });
    assert.equal(first.status, 200, first.text);
    assert.equal(first.json.folder, 'Drafts');
    const second = await alice.req('PUT', '/api/drafts', {
      json: draft({
        subject: 'Draft 2',
        html: '<p>Hi <b>Bob</b><script>x()</script></p>',
        // the message it forwards comes back with it, whatever the folder's name
        origin: { folder: 'Projekte/Größe 😀', uid: 7, kind: 'forward', uidValidity: 4294967295 },
        draftUid: first.json.uid,
        // as the editor does: the attachment as a part of the draft it replaces
        attachments: first.json.attachments,
      }),
    });
    assert.equal(second.status, 200);
    const drafts = await messagesIn('Drafts');
    assert.deepEqual(
      drafts.map((m) => m.subject),
      ['Draft 2'],
      'the first draft was replaced',
    );
    assert.equal(drafts[0]!.flags.draft, true);
    const back = await alice.get(`/api/messages/${second.json.uid}/draft` + q({ folder: 'Drafts' }));
    assert.equal(back.status, 200);
    assert.equal(back.json.subject, 'Draft 2');
    assert.equal(back.json.to, `"Bob" <${BOB}>`);
    assert.equal(back.json.html, '<p>Hi <b>Bob</b></p>');
    assert.deepEqual(back.json.origin, {
      folder: 'Projekte/Größe 😀',
      uid: 7,
      kind: 'forward',
      uidValidity: 4294967295,
    });
    assert.deepEqual(
      back.json.attachments.map((a: { filename: string }) => a.filename),
      ['notes.txt'],
    );
    assert.equal((await alice.req('DELETE', `/api/drafts/${second.json.uid}`)).status, 200);
    assert.equal((await messagesIn('Drafts')).length, 0);
    // a draft need not have recipients yet, but what it has must parse
    assert.equal((await alice.req('PUT', '/api/drafts', { json: draft({ to: '' }) })).status, 200);
    const bad = await alice.req('PUT', '/api/drafts', { json: draft({ to: 'bob at example' }) });
    assert.deepEqual([bad.status, bad.json.error], [400, 'bad_request']);
    assert.match(bad.json.message, /^to: /);
  });
});

describe('sending', () => {
  test(
    'a reply with an attachment reaches the recipient; a copy with Bcc lands in Sent',
    { timeout: 30_000 },
    async () => {
      const original = (await messagesIn('INBOX')).find((m) => m.subject === 'Question')!;
      const { uidValidity } = (await alice.get(`/api/messages/${original.uid}` + q({ folder: 'INBOX' })))
        .json;
      const up = await upload(alice, 'answer.txt', Buffer.from('the answer is 42'), 'text/plain');
      const saved = await alice.req('PUT', '/api/drafts', { json: draft({ subject: 'Re: Question' }) });
      const res = await alice.post(
        '/api/send',
        draft({
          subject: 'Re: Question',
          text: 'See attached.\n\n> the question',
          bcc: 'team@example.test',
          attachments: [{ upload: up.json.id }],
          inReplyTo: '<q1@example.test>',
          references: '<q1@example.test>',
          origin: { folder: 'INBOX', uid: original.uid, kind: 'reply', uidValidity },
          draftUid: saved.json.uid,
        }),
      );
      assert.equal(res.status, 200, res.text);
      assert.match(res.json.messageId, /^<[\w-]+@example\.test>$/);
      assert.deepEqual(res.json.warnings, []);
      const mail = await bobsMail('Re: Question');
      assert.match(mail, /^From: alice@example\.test$/m);
      assert.match(mail, /^In-Reply-To: <q1@example\.test>$/m);
      assert.match(mail, new RegExp(`^Message-ID: ${res.json.messageId}`, 'mi'));
      assert.match(mail, /filename=answer\.txt/);
      assert.doesNotMatch(mail, /^Bcc:/m, 'the msa removed Bcc');
      const sent = await messagesIn('Sent');
      assert.equal(sent[0]!.subject, 'Re: Question');
      const copy = await alice.get(`/api/messages/${sent[0]!.uid}` + q({ folder: 'Sent' }));
      assert.deepEqual(copy.json.bcc, [{ name: '', address: 'team@example.test' }]);
      assert.ok(!(await messagesIn('Drafts')).some((m) => m.uid === saved.json.uid), 'the draft is gone');
      const answered = (await messagesIn('INBOX')).find((m) => m.uid === original.uid)!;
      assert.equal(answered.flags.answered, true);
    },
  );

  test(
    'forwarding takes the attachments of the original; rich text is sanitised',
    { timeout: 30_000 },
    async () => {
      const spring = (await messagesIn('INBOX')).find((m) => m.subject === 'Spring offers')!;
      const view = (await alice.get(`/api/messages/${spring.uid}` + q({ folder: 'INBOX' }))).json;
      const pdf = view.attachments.find((a: { filename: string }) => a.filename === 'report.pdf');
      const res = await alice.post(
        '/api/send',
        draft({
          subject: 'Fwd: Spring offers',
          html: '<p>Look at <a href="https://shop.example/">this</a></p><img src="https://tracker.example/x.gif"><script>steal()</script>',
          text: '',
          attachments: [{ folder: 'INBOX', uid: spring.uid, part: pdf.part }],
          origin: { folder: 'INBOX', uid: spring.uid, kind: 'forward', uidValidity: view.uidValidity },
        }),
      );
      assert.equal(res.status, 200, res.text);
      const mail = await bobsMail('Fwd: Spring offers');
      assert.match(mail, /filename=report\.pdf/);
      assert.match(mail, /Content-Type: text\/plain/);
      assert.doesNotMatch(mail, /steal\(\)|tracker\.example/);
      assert.equal((await messagesIn('INBOX')).find((m) => m.uid === spring.uid)!.flags.forwarded, true);
    },
  );

  test(
    'a reply kept as a draft marks no other message once its folder was deleted and made again',
    { timeout: 60_000 },
    async () => {
      const imap = await storeSession(t, ALICE);
      try {
        await imap.mailboxCreate('Lists');
        await imap.append('Lists', plainMessage({ subject: 'Old thread', from: `"Bob" <${BOB}>` }));
        const read = (await messagesIn('Lists')).find((m) => m.subject === 'Old thread')!;
        const view = (await alice.get(`/api/messages/${read.uid}` + q({ folder: 'Lists' }))).json;
        assert.ok(view.uidValidity > 0);
        // the reply as the editor makes it (web/src/format.ts's replyDraft), kept as a draft
        const origin = { folder: 'Lists', uid: read.uid, kind: 'reply', uidValidity: view.uidValidity };
        const saved = await alice.req('PUT', '/api/drafts', {
          json: draft({ subject: 'Re: Old thread', origin }),
        });
        assert.equal(saved.status, 200, saved.text);
        // the folder goes, and comes back with another message under the same UID
        await imap.mailboxDelete('Lists');
        await imap.mailboxCreate('Lists');
        await imap.append('Lists', plainMessage({ subject: 'Not answered', from: 'carol@remote.example' }));
        const other = (await messagesIn('Lists')).find((m) => m.subject === 'Not answered')!;
        assert.equal(other.uid, read.uid, 'the UID names another message now');
        // reopened and sent, as the editor does
        const back = (await alice.get(`/api/messages/${saved.json.uid}/draft` + q({ folder: 'Drafts' })))
          .json;
        assert.deepEqual(back.origin, origin);
        const res = await alice.post(
          '/api/send',
          draft({ subject: 'Re: Old thread', origin: back.origin, draftUid: saved.json.uid }),
        );
        assert.equal(res.status, 200, res.text);
        assert.deepEqual(res.json.warnings, []);
        const after = (await messagesIn('Lists')).find((m) => m.uid === other.uid)!;
        assert.equal(after.flags.answered, false, 'the message now under that UID is not marked answered');
      } finally {
        await imap.logout();
      }
    },
  );

  test(
    "a reply whose original's folder was deleted meanwhile is sent and filed without a false warning",
    { timeout: 60_000 },
    async () => {
      const imap = await storeSession(t, ALICE);
      try {
        await imap.mailboxCreate('Projects');
        const appended = await imap.append(
          'Projects',
          plainMessage({ subject: 'Kick-off', from: `"Bob" <${BOB}>` }),
        );
        const status = await imap.status('Projects', { uidValidity: true });
        assert.ok(appended && appended.uid && status);
        const { uid } = appended;
        const { uidValidity } = status;
        await imap.mailboxDelete('Projects');
        const res = await alice.post(
          '/api/send',
          draft({
            subject: 'Re: Kick-off',
            origin: { folder: 'Projects', uid, kind: 'reply', uidValidity: Number(uidValidity) },
          }),
        );
        assert.equal(res.status, 200, res.text);
        assert.deepEqual(res.json.warnings, [], 'the copy is in Sent, and the answer does not say otherwise');
        assert.ok((await messagesIn('Sent')).some((m) => m.subject === 'Re: Kick-off'));
      } finally {
        await imap.logout();
      }
    },
  );

  test(
    'a draft that keeps no UIDVALIDITY with its original (saved before it was kept) marks nothing',
    { timeout: 60_000 },
    async () => {
      const imap = await storeSession(t, ALICE);
      try {
        await imap.append('INBOX', plainMessage({ subject: 'Older draft', from: `"Bob" <${BOB}>` }));
      } finally {
        await imap.logout();
      }
      const { uid } = (await messagesIn('INBOX')).find((m) => m.subject === 'Older draft')!;
      // as such a draft's X-Mailyard-Origin reads: "reply; uid=<n>; folder=<name>"
      const saved = await alice.req('PUT', '/api/drafts', {
        json: draft({ subject: 'Re: Older draft', origin: { folder: 'INBOX', uid, kind: 'reply' } }),
      });
      const back = (await alice.get(`/api/messages/${saved.json.uid}/draft` + q({ folder: 'Drafts' }))).json;
      assert.deepEqual(back.origin, { folder: 'INBOX', uid, kind: 'reply', uidValidity: null });
      const res = await alice.post(
        '/api/send',
        draft({ subject: 'Re: Older draft', origin: back.origin, draftUid: saved.json.uid }),
      );
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.json.warnings, []);
      assert.equal((await messagesIn('INBOX')).find((m) => m.uid === uid)!.flags.answered, false);
    },
  );

  test(
    'a reply to a message whose subject, names and ids hold line breaks: every header on one line',
    { timeout: 60_000 },
    async () => {
      // encoded words that decode to CR LF, a folded Message-ID, an encoded word among the references
      const word = (text: string) => `=?UTF-8?B?${Buffer.from(text).toString('base64')}?=`;
      const file = word('notes\r\nX-Evil: 3.txt');
      await sendRaw(
        t.p,
        ALICE,
        [
          `From: ${word('Bob\r\nX-Evil: 1')} <${BOB}>`,
          `To: ${ALICE}`,
          `Subject: ${word('Plans\r\nBcc: mallory@example.test')}`,
          'Date: Mon, 6 Jan 2025 10:00:00 +0000',
          'Message-ID:\r\n <plans.1@example.test>',
          `References: <r1@example.test>\r\n\t<r2@example.test> ${word('\r\nX-Evil: 2')}`,
          'MIME-Version: 1.0',
          'Content-Type: multipart/mixed; boundary="b1"',
          '',
          '--b1',
          'Content-Type: text/plain; charset=utf-8',
          '',
          'Shall we meet?',
          '--b1',
          `Content-Type: text/plain; name="${file}"`,
          `Content-Disposition: attachment; filename="${file}"`,
          'Content-Transfer-Encoding: base64',
          '',
          Buffer.from('notes').toString('base64'),
          '--b1--',
          '',
        ].join('\r\n'),
      );
      const { uid } = (await messagesIn('INBOX')).find((m) => m.subject.startsWith('Plans'))!;
      const m = (await alice.get(`/api/messages/${uid}` + q({ folder: 'INBOX' }))).json;
      assert.equal(m.subject, 'Plans\r\nBcc: mallory@example.test');
      // the reply as the editor makes it (web/src/format.ts's replyDraft), and a typed name
      const res = await alice.post(
        '/api/send',
        draft({
          fromName: 'Alice\r\nX-Evil: 4',
          to: `"${m.from[0].name}" <${m.from[0].address}>`,
          subject: `Re: ${m.subject}`,
          inReplyTo: m.messageId,
          references: [m.references, m.messageId].filter(Boolean).join(' '),
          attachments: [{ folder: 'INBOX', uid, part: m.attachments[0].part }],
          origin: { folder: 'INBOX', uid, kind: 'reply', uidValidity: m.uidValidity },
        }),
      );
      assert.equal(res.status, 200, res.text);
      const raw = await bobsMail('Re: Plans Bcc: mallory@example.test');
      const head = raw.slice(0, raw.indexOf('\r\n\r\n')).replace(/\r\n[ \t]+/g, ' ');
      assert.match(head, /^In-Reply-To: <plans\.1@example\.test>$/m);
      assert.match(head, /^References: <r1@example\.test> <r2@example\.test> <plans\.1@example\.test>$/m);
      // nothing a reader decodes to a line break, in the headers of the message or its parts:
      // no encoded CR or LF in an encoded word (RFC 2047) or a parameter (RFC 2231)
      assert.doesNotMatch(raw, /=0[DA]|%0[DA]/i);
      for (const [, b64] of raw.matchAll(/=\?UTF-8\?B\?([^?]*)\?=/gi))
        assert.doesNotMatch(Buffer.from(b64!, 'base64').toString('utf8'), /[\r\n]/);
      // and as bob's webmail shows it
      const bob = new WebClient(t.webmail.port, t.ca);
      assert.equal((await bob.login(BOB)).status, 200);
      const rows = (await bob.get('/api/messages' + q({ folder: 'INBOX', limit: 200 }))).json.rows as {
        uid: number;
        subject: string;
      }[];
      const reply = rows.find((r) => r.subject === 'Re: Plans Bcc: mallory@example.test')!;
      const seen = (await bob.get(`/api/messages/${reply.uid}` + q({ folder: 'INBOX' }))).json;
      assert.deepEqual(
        [seen.from[0].name, seen.to[0].name, seen.attachments.map((a: { filename: string }) => a.filename)],
        ['Alice X-Evil: 4', 'Bob X-Evil: 1', ['notes__X-Evil: 3.txt']],
      );
    },
  );

  test('from an alias and a plus-address, never from someone else', { timeout: 30_000 }, async () => {
    assert.equal(
      (await alice.post('/api/send', draft({ from: 'team@example.test', subject: 'As the team' }))).status,
      200,
    );
    await bobsMail('As the team');
    assert.equal(
      (await alice.post('/api/send', draft({ from: 'alice+lists@example.test', subject: 'Plus' }))).status,
      200,
    );
    const forged = await alice.post('/api/send', draft({ from: BOB, subject: 'Forged' }));
    assert.deepEqual([forged.status, forged.json.error], [400, 'bad_sender']);
    assert.match(forged.json.message, /bob@example\.test/);
    assert.equal((await alice.post('/api/send', draft({ from: 'postmaster@example.test' }))).status, 400);
  });

  test('bad recipients, none at all, and a refusal by the mail server', { timeout: 30_000 }, async () => {
    const bad = await alice.post('/api/send', draft({ to: 'Bob, <not an address>' }));
    assert.deepEqual([bad.status, bad.json.error], [400, 'bad_request']);
    const none = await alice.post('/api/send', draft({ to: '', cc: '', bcc: '' }));
    assert.deepEqual([none.status, none.json.message], [400, 'to: expected a recipient']);
    const refused = await alice.post('/api/send', draft({ to: 'nobody@example.test' }));
    assert.deepEqual([refused.status, refused.json.error], [422, 'send_refused']);
    assert.match(refused.json.message, /550 5\.1\.1/);
    // one of two refused: sent to the other, and the answer says who did not get it
    const partly = await alice.post(
      '/api/send',
      draft({ to: `${BOB}, nobody@example.test`, subject: 'Partly refused' }),
    );
    assert.equal(partly.status, 200, partly.text);
    assert.equal(partly.json.sent, true);
    assert.equal(partly.json.warnings.length, 1, JSON.stringify(partly.json.warnings));
    assert.match(partly.json.warnings[0], /^Not sent to nobody@example\.test: 550 5\.1\.1/);
    // an address written twice, in To and in Cc, in another case: one recipient, refused
    // once (and counted once towards the mail server's limits)
    const twice = await alice.post(
      '/api/send',
      draft({ to: `${BOB}, nobody@example.test`, cc: 'Nobody@EXAMPLE.test, BOB@example.test' }),
    );
    assert.equal(twice.status, 200, twice.text);
    assert.deepEqual(twice.json.warnings.length, 1, JSON.stringify(twice.json.warnings));
    const gone = await alice.post(
      '/api/send',
      draft({ attachments: [{ upload: 'aaaaaaaaaaaaaaaaaaaaaa' }] }),
    );
    assert.deepEqual([gone.status, gone.json.error], [404, 'no_such_upload']);
    const foreign = await alice.post(
      '/api/send',
      draft({ attachments: [{ folder: '../bob', uid: 1, part: '2' }] }),
    );
    assert.deepEqual([foreign.status, foreign.json.error], [404, 'no_such_folder']);
    const notJson = await alice.req('POST', '/api/send', {
      body: Buffer.from('{'),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(notJson.status, 400);
  });

  test('addresses with only spaces between them are a recipient each', { timeout: 30_000 }, async () => {
    // a column of addresses pasted into To: Gmail and Thunderbird take each of them
    const res = await alice.post('/api/send', draft({ to: `${BOB} ${ALICE}\n`, subject: 'Pasted list' }));
    assert.equal(res.status, 200, res.text);
    const atBob = await bobsMail('Pasted list');
    assert.match(atBob, /^To: bob@example\.test, alice@example\.test\r?$/m);
    await waitFor(async () => (await messagesIn('INBOX')).some((m) => m.subject === 'Pasted list'), {
      what: 'the copy to alice in her inbox',
    });
    // a name in quotes, an address in <> or a comment stay as written
    const named = await alice.post(
      '/api/send',
      draft({ to: `"${ALICE}" <${BOB}>, ${BOB} (${ALICE})`, subject: 'Named as written' }),
    );
    assert.equal(named.status, 200, named.text);
    assert.match(await bobsMail('Named as written'), /^To: "alice@example\.test" <bob@example\.test>,/m);
    // words and addresses mixed: which name is whose, no one can tell
    const mixed = await alice.post('/api/send', draft({ to: `Bob ${BOB} ${ALICE}` }));
    assert.deepEqual([mixed.status, mixed.json.error], [400, 'bad_request']);
    assert.equal(mixed.json.message, 'to: put a comma between bob@example.test and alice@example.test');
    const half = await alice.post('/api/send', draft({ cc: `${BOB} alice@` }));
    assert.deepEqual([half.status, half.json.message], [400, 'cc: not an address: alice@']);
  });

  test(
    "recipients enough for the mail server's error limit: nothing sent, and the refused ones named",
    { timeout: 60_000 },
    async () => {
      // the msa ends the session at its 20th error (smtpd_hard_error_limit), before the message
      const unknown = Array.from({ length: 22 }, (_, i) => `nobody${i}@example.test`);
      const res = await alice.post(
        '/api/send',
        draft({ to: [BOB, ...unknown].join(', '), subject: 'To too many strangers' }),
      );
      assert.deepEqual([res.status, res.json.error], [422, 'send_refused'], res.text);
      assert.match(
        res.json.message,
        /^Nothing was sent: the mail server refused 20 recipients, then ended the connection: nobody0@example\.test, nobody1@example\.test, nobody2@example\.test, nobody3@example\.test, nobody4@example\.test and 15 more \(550 5\.1\.1 /,
      );
      const refused = res.json.refused as { address: string; reply: string }[];
      assert.deepEqual(
        refused.map((r) => r.address),
        unknown.slice(0, 20),
      );
      assert.ok(
        refused.every((r) => /^550 5\.1\.1 /.test(r.reply)),
        JSON.stringify(refused),
      );
      // nothing half-sent: not to bob, whose address the msa had taken, nor filed in Sent
      assert.equal((await alice.post('/api/send', draft({ subject: 'After the strangers' }))).status, 200);
      await bobsMail('After the strangers');
      assert.ok(!t.p.inbox(BOB).some((f) => readFileSync(f, 'utf8').includes('To too many strangers')));
      assert.ok(!(await messagesIn('Sent')).some((m) => m.subject === 'To too many strangers'));
    },
  );

  test(
    "recipients past the mail server's limit per message: sent to them in further transactions",
    { timeout: 60_000 },
    async () => {
      // the msa takes 2 recipients per message and answers 452 4.5.3 to the third
      const limited = await t.anotherMsa({ smtpd_recipient_limit: 2 });
      const w = await t.another({ submission_server: `127.0.0.1:${limited.ports.submissions}` });
      const c = new WebClient(w.port, t.ca);
      await c.login(ALICE);
      const more = ['carol@example.test', 'dave@example.test', 'erin@example.test'];
      for (const a of more) await addAccount(t.p.directory, a);
      const everyone = [BOB, ...more, ALICE];
      const subject = 'To more than the limit';
      const res = await c.post('/api/send', draft({ to: everyone.join(', '), subject }));
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.json.warnings, []);
      // each of the five gets it, once
      const copies = (who: string) =>
        t.p.inbox(who).filter((f) => readFileSync(f, 'utf8').includes(`Subject: ${subject}`)).length;
      for (const who of everyone)
        await waitFor(() => copies(who) > 0, { what: `"${subject}" in ${who}'s mailbox` });
      // a copy that came twice would be there by the time the last one came once
      assert.deepEqual(
        everyone.map(copies),
        everyone.map(() => 1),
      );
      const inSent = (await messagesIn('Sent')).filter((m) => m.subject === subject);
      assert.equal(inSent.length, 1);
    },
  );

  test(
    "more recipients past the mail server's limit than its error limit: sent to all, in parts",
    { timeout: 60_000 },
    async () => {
      // each 452 counts toward the msa's hard error limit: one envelope with all of them
      // would be ended at the third, and the message sent to no one
      const limited = await t.anotherMsa({ smtpd_recipient_limit: 2, smtpd_hard_error_limit: 3 });
      const w = await t.another({ submission_server: `127.0.0.1:${limited.ports.submissions}` });
      const c = new WebClient(w.port, t.ca);
      await c.login(ALICE);
      const more = ['fay@example.test', 'gus@example.test', 'hal@example.test', 'ivy@example.test'];
      for (const a of more) await addAccount(t.p.directory, a);
      const everyone = [BOB, ALICE, ...more];
      const subject = 'To more than both limits';
      const res = await c.post('/api/send', draft({ to: everyone.join(', '), subject }));
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.json.warnings, []);
      for (const who of everyone)
        await waitFor(
          () => t.p.inbox(who).some((f) => readFileSync(f, 'utf8').includes(`Subject: ${subject}`)),
          { what: `"${subject}" in ${who}'s mailbox` },
        );
    },
  );

  test(
    'the deadline while sending to recipients past the limit: they are named, and still get it',
    { timeout: 60_000 },
    async () => {
      const limited = await t.anotherMsa({ smtpd_recipient_limit: 2 });
      // the second transaction's connection hears nothing from the msa until released
      const proxy: TcpProxy = await startTcpProxy(
        { host: '127.0.0.1', port: limited.ports.submissions },
        { preamble: () => (proxy.accepted === 2 && proxy.hold(), null) },
      );
      try {
        const c = await aliceSendingThrough(proxy.port);
        await addAccount(t.p.directory, 'jan@example.test');
        const subject = 'Past the limit, past the deadline';
        const res = await c.post('/api/send', draft({ to: `${BOB}, ${ALICE}, jan@example.test`, subject }));
        assert.equal(res.status, 200, res.text);
        assert.ok(
          (res.json.warnings as string[]).includes(
            'Still being sent to jan@example.test: the mail server takes it in parts',
          ),
          res.text,
        );
        proxy.release();
        await waitFor(
          () =>
            t.p
              .inbox('jan@example.test')
              .some((f) => readFileSync(f, 'utf8').includes(`Subject: ${subject}`)),
          { what: `"${subject}" in jan's mailbox` },
        );
      } finally {
        await proxy.close();
      }
    },
  );

  test(
    'as many recipients the mail server cannot check for now: a temporary failure naming them',
    { timeout: 60_000 },
    async () => {
      // the recipients' domain cannot be looked up: 450 4.4.3 each, and the msa ends the session
      t.p.dns.set('broken.test', { SERVFAIL: true });
      const unsure = Array.from({ length: 20 }, (_, i) => `someone${i}@broken.test`);
      const res = await alice.post('/api/send', draft({ to: [BOB, ...unsure].join(', ') }));
      assert.deepEqual([res.status, res.json.error], [503, 'unavailable'], res.text);
      assert.match(
        res.json.message,
        /^Nothing was sent: the mail server could not take 20 recipients for now, then ended the connection: someone0@broken\.test, .* and 15 more \(4\d\d .*\)\. Try again shortly$/,
      );
    },
  );

  test('a mail server that is down is a temporary failure', { timeout: 30_000 }, async () => {
    const down = await t.another({ submission_server: '127.0.0.1:1' });
    const c = new WebClient(down.port, t.ca);
    await c.login(ALICE);
    const res = await c.post('/api/send', draft({ subject: 'Nowhere' }));
    assert.deepEqual([res.status, res.json.error], [503, 'unavailable']);
    const noImap = await t.another({ imap_server: '127.0.0.1:1' });
    const d = new WebClient(noImap.port, t.ca);
    await d.login(ALICE);
    const folders = await d.get('/api/folders');
    assert.deepEqual([folders.status, folders.json.error], [503, 'unavailable']);
  });

  test(
    'a store that stops answering: 503 at IMAP_TIMEOUT, then served again',
    { timeout: 60_000 },
    async () => {
      const stallable = await webmailOnStallableImap(t);
      const proxy = stallable.proxy;
      try {
        const c = new WebClient(stallable.port, t.ca);
        await c.login(ALICE);
        assert.equal((await c.get('/api/messages?folder=INBOX')).status, 200);
        // the connection stays open, its answers never come
        proxy.hold();
        const stuck = await c.get('/api/messages?folder=INBOX');
        assert.deepEqual([stuck.status, stuck.json.error], [503, 'unavailable']);
        proxy.release();
        const again = await c.get('/api/messages?folder=INBOX');
        assert.equal(again.status, 200);
        assert.ok(proxy.accepted >= 2, 'the stuck connection was not used again');
      } finally {
        await stallable.close();
      }
    },
  );

  test(
    'a mail server that stops answering: 503 at SEND_TIMEOUT, not at its own timeouts',
    { timeout: 60_000 },
    async () => {
      const proxy = await startTcpProxy({ host: '127.0.0.1', port: t.msa.ports.submissions });
      try {
        const c = await aliceSendingThrough(proxy.port);
        // connections are taken, nothing the msa says reaches the webmail
        proxy.hold();
        const started = performance.now();
        const res = await c.post('/api/send', draft({ subject: 'Held up' }));
        const took = performance.now() - started;
        assert.ok(took < SEND_MS + MARGIN_MS, `answered after ${Math.round(took)} ms`);
        assert.deepEqual([res.status, res.json.error], [503, 'send_timeout'], res.text);
        assert.match(res.json.message, /did not confirm the message in time/);
      } finally {
        proxy.release();
        await proxy.close();
      }
    },
  );

  test(
    "a broker that stops confirming the mail server's publish: 503 at SEND_TIMEOUT",
    { timeout: 120_000 },
    async () => {
      const rabbit = await startPrivateRabbit();
      try {
        const msa = await t.anotherMsa({ amqp_url: rabbit.url });
        const c = await aliceSendingThrough(msa.ports.submissions);
        // the msa takes the whole message, then waits for a confirm that does not come
        rabbit.pause();
        const started = performance.now();
        const res = await c.post('/api/send', draft({ subject: 'Not confirmed' }));
        const took = performance.now() - started;
        assert.ok(took < SEND_MS + MARGIN_MS, `answered after ${Math.round(took)} ms`);
        assert.deepEqual([res.status, res.json.error], [503, 'send_timeout'], res.text);
      } finally {
        rabbit.resume();
        await rabbit.close();
      }
    },
  );

  test(
    'a message the mail server took is reported sent at SEND_TIMEOUT, even while its copy in Sent hangs',
    { timeout: 60_000 },
    async () => {
      const proxy = await startTcpProxy({ host: '127.0.0.1', port: t.retrieval.ports.imaps });
      try {
        // the store's own deadline (IMAP_TIMEOUT, 30 s) is far beyond the send's
        const w = await t.another({ imap_server: `127.0.0.1:${proxy.port}`, send_timeout: `${SEND_MS}ms` });
        const c = new WebClient(w.port, t.ca);
        await c.login(ALICE);
        assert.equal((await c.get('/api/folders')).status, 200);
        proxy.hold();
        const started = performance.now();
        const res = await c.post('/api/send', draft({ subject: 'Sent while the store hangs' }));
        const took = performance.now() - started;
        assert.ok(took < SEND_MS + MARGIN_MS, `answered after ${Math.round(took)} ms`);
        assert.equal(res.status, 200, res.text);
        assert.equal(res.json.sent, true);
        assert.match(res.json.warnings.join('\n'), /Sent, but the copy in Sent may be missing/);
        await bobsMail('Sent while the store hangs');
      } finally {
        proxy.release();
        await proxy.close();
      }
    },
  );

  test('a store that greets, then never logs in: 503 at IMAP_TIMEOUT', { timeout: 60_000 }, async () => {
    const mute = createTlsServer({ key: t.key, cert: t.ca }, (s) => {
      s.on('error', () => undefined);
      s.write('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n');
    });
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', () => r()));
    try {
      const port = (mute.address() as AddressInfo).port;
      const w = await t.another({ imap_server: `127.0.0.1:${port}`, imap_timeout: '2s' });
      const c = new WebClient(w.port, t.ca);
      await c.login(ALICE);
      const stuck = await c.get('/api/messages?folder=INBOX');
      assert.deepEqual([stuck.status, stuck.json.error], [503, 'unavailable']);
    } finally {
      mute.close();
    }
  });
});
