// The admin console's API: the admin guard on every route, CSRF on every change, and each
// action through the operations the CLI calls, audited with the admin who did it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ImapFlow } from 'imapflow';
import { test } from 'node:test';
import { freePort, queueDepth, unreachableRedis, waitFor } from '@mailyard/testkit';
import { newQueueId } from '@mailyard/smtp-core';
import { Directory } from '@mailyard/directory';
import { Operations } from '@mailyard/admin';
import { addAccount } from '../../../test/harness.js';
import { MailRules } from '@mailyard/mail-rules';
import { sendRaw } from '../../retrieval/test/helpers.js';
import { loggedIn, webmailFile } from './file-setup.js';
import { imapLogin as imapLoginAs } from './mail-clients.js';
import { DEFERRED_QUEUE, deadMail, deadMessage, deferredMail, queueIdsIn, testBus } from './dead-letters.js';
import { newsletter } from './messages.js';
import {
  ALICE,
  BOB,
  HOST,
  PASSWORD,
  webmailOnStallableImap,
  type WebmailTestbed,
} from './webmail-harness.js';
import { WebClient, q, type WebResponse } from './web-client.js';
import type { AdminDeadLetter } from '../src/admin-api-types.js';

let t: WebmailTestbed;
let admin: WebClient;
webmailFile({}, async (f) => {
  t = f.t;
  await t.p.directory.setAdmin(ALICE, true);
  admin = await loggedIn(t, ALICE);
});
const client = () => new WebClient(t.webmail.port, t.ca);
type AuditRow = { action: string; target: string };
const enc = encodeURIComponent;

test(
  'a user without the admin role gets 403 from every admin route, and no Admin',
  { timeout: 60_000 },
  async () => {
    const bob = client();
    assert.equal((await bob.login(BOB)).status, 200);
    assert.equal((await bob.get('/api/account')).json.admin, false);
    for (const [method, path] of [
      ['GET', '/api/admin/domains'],
      ['POST', '/api/admin/domains'],
      ['GET', '/api/admin/accounts'],
      ['POST', `/api/admin/accounts/${enc(ALICE)}/lock`],
      ['GET', '/api/admin/queue'],
      ['GET', '/api/admin/dead-letters'],
      ['GET', '/api/admin/dead-letters/ABC123'],
      ['POST', '/api/admin/dead-letters/ABC123/requeue'],
      ['POST', '/api/admin/dead-letters/requeue-all'],
      ['DELETE', '/api/admin/dead-letters/ABC123'],
      ['PUT', '/api/admin/policy/lists/smtpd_client_restrictions'],
      ['GET', '/api/admin/audit'],
    ] as const) {
      const res = await bob.req(method, path, { json: { domain: 'bob.test', entries: [] } });
      assert.deepEqual([method, path, res.status, res.json.error], [method, path, 403, 'not_admin']);
    }
    assert.equal(await t.p.directory.isLocalDomain('bob.test'), false);
    assert.equal((await client().get('/api/admin/domains')).status, 401);
  },
);

test('an account with a long address is managed as any other', { timeout: 60_000 }, async () => {
  const long = `${'l'.repeat(64)}@${'d'.repeat(60)}.${'e'.repeat(40)}.test`;
  await addAccount(t.p.directory, long);
  const lock = await admin.post(`/api/admin/accounts/${enc(long)}/lock`);
  assert.deepEqual([lock.status, lock.json.account], [200, long], lock.text);
  assert.ok((await t.p.directory.accountRecord(long))?.locked);
  const del = await admin.req('DELETE', `/api/admin/accounts/${enc(long)}`);
  assert.deepEqual([del.status, del.json.deleted], [200, long], del.text);
  assert.equal(await t.p.directory.accountExists(long), false);
});

test(
  'an access action with a line break is refused, and forges no audit line',
  { timeout: 60_000 },
  async () => {
    const action =
      'REJECT go away\n2026-01-01T00:00:00.000Z\tbob@example.test\taccount.admin.grant\tbob@example.test';
    const res = await admin.post('/api/admin/policy/access/sender_access', { key: 'forged@x.test', action });
    assert.deepEqual([res.status, res.json.error], [400, 'bad_request'], res.text);
    assert.match(res.json.message, /line break/);
    const audit = await admin.get('/api/admin/audit');
    assert.ok(
      !audit.json.entries.some((e: { detail?: { key?: string } }) => e.detail?.key === 'forged@x.test'),
    );
  },
);

test('a change without the CSRF token is refused and changes nothing', { timeout: 60_000 }, async () => {
  const res = await admin.req('POST', '/api/admin/domains', { json: { domain: 'nocsrf.test' }, csrf: false });
  assert.deepEqual([res.status, res.json.error], [403, 'csrf']);
  const lock = await admin.req('POST', `/api/admin/accounts/${enc(BOB)}/lock`, { json: {}, csrf: false });
  assert.equal(lock.status, 403);
  assert.equal(await t.p.directory.isLocalDomain('nocsrf.test'), false);
  assert.equal((await t.p.directory.accountRecord(BOB))?.locked, undefined);
});

test(
  'domains: added with DKIM keys and the records to publish; unknown ones are 404 with a sentence',
  { timeout: 60_000 },
  async () => {
    const res = await admin.post('/api/admin/domains', { domain: 'Console.Test' });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.domain, 'console.test');
    assert.deepEqual(res.json.dkim.map((k: { algorithm: string }) => k.algorithm).sort(), ['ed25519', 'rsa']);
    const dkim = res.json.records.filter((r: { purpose: string }) => r.purpose.startsWith('dkim:'));
    assert.equal(dkim.length, 2);
    assert.match(dkim[0].zoneLine, /\._domainkey\.console\.test\. IN TXT/);
    assert.ok(
      res.json.records.some(
        (r: { type: string; value: string }) => r.type === 'MX' && r.value === '10 mail.mailyard.test.',
      ),
    );
    const list = (await admin.get('/api/admin/domains')).json.domains;
    assert.deepEqual(
      list.find((d: { domain: string }) => d.domain === 'console.test'),
      {
        domain: 'console.test',
        accounts: 0,
        aliases: 0,
        dkim: res.json.dkim.map((k: { selector: string }) => k.selector),
      },
    );
    const dup = await admin.post('/api/admin/domains', { domain: 'console.test' });
    assert.deepEqual([dup.status, dup.json.message], [409, 'Domain console.test already exists']);
    const bad = await admin.post('/api/admin/domains', { domain: 'not a domain' });
    assert.deepEqual([bad.status, bad.json.message], [400, '"not a domain" is not a valid domain name']);
    const unknown = await admin.get('/api/admin/domains/nope.test/records');
    assert.deepEqual(
      [unknown.status, unknown.json.error, unknown.json.message],
      [
        404,
        'unknown_domain',
        'Domain nope.test is not a local domain (add it with: mailyard domain add nope.test)',
      ],
    );
    assert.equal((await admin.req('DELETE', '/api/admin/domains/nope.test')).status, 404);
    const del = await admin.req('DELETE', '/api/admin/domains/console.test');
    const selectors = res.json.dkim.map((k: { selector: string }) => k.selector);
    assert.deepEqual([del.status, del.json], [200, { deleted: 'console.test', dkim: selectors }]);
    // its keys went with it: the DKIM page lists none of them, so offers no rotation of them
    const keys = (await admin.get('/api/admin/dkim')).json.keys as { domain: string }[];
    assert.deepEqual(
      keys.filter((k) => k.domain === 'console.test'),
      [],
    );
    const listed = await admin.get('/api/admin/dkim?domain=console.test');
    assert.deepEqual([listed.status, listed.json.error], [404, 'unknown_domain']);
    const rotate = await admin.post('/api/admin/dkim/rotate', { domain: 'console.test', algorithm: 'rsa' });
    assert.deepEqual(
      [rotate.status, rotate.json.message],
      [404, 'Domain console.test is not a local domain (add it with: mailyard domain add console.test)'],
    );
  },
);

test(
  'accounts: add, quota and usage, lock refuses IMAP until unlock, delete',
  { timeout: 90_000 },
  async () => {
    const carol = 'carol@example.test';
    const weak = await admin.post('/api/admin/accounts', { address: carol, password: 'short' });
    assert.deepEqual(
      [weak.status, weak.json.message],
      [400, 'Password is too short (at least 10 characters)'],
    );
    // as `mailyard user add` says it, not "expected a password"
    const long = await admin.post('/api/admin/accounts', { address: carol, password: 'p4ss '.repeat(205) });
    assert.deepEqual(
      [long.status, long.json.message],
      [400, 'Password is too long (at most 1024 characters)'],
    );
    const added = await admin.post('/api/admin/accounts', {
      address: 'Carol@example.test',
      password: PASSWORD,
    });
    assert.deepEqual([added.status, added.json.account], [200, carol]);
    const unknownDomain = await admin.post('/api/admin/accounts', {
      address: 'x@nope.test',
      password: PASSWORD,
    });
    assert.equal(unknownDomain.status, 404);

    const quota = await admin.post(`/api/admin/accounts/${enc(carol)}/quota`, { quota: '10M' });
    assert.deepEqual([quota.status, quota.json.quota], [200, 10 * 1024 * 1024]);
    const badQuota = await admin.post(`/api/admin/accounts/${enc(carol)}/quota`, { quota: 'lots' });
    assert.deepEqual(
      [badQuota.status, badQuota.json.message],
      [400, '"lots" is not a quota (a size such as 512M or 2G, "unlimited", or "default")'],
    );
    const listed = await admin.get('/api/admin/accounts?q=carol');
    assert.equal(listed.json.total, 1);
    const [row] = listed.json.accounts;
    assert.equal(row.address, carol);
    assert.equal(row.quota, 10 * 1024 * 1024);
    assert.equal(row.usage.limit, 10 * 1024 * 1024);
    assert.equal(typeof row.usage.used, 'number');

    const web = client();
    assert.equal((await web.login(carol)).status, 200);
    assert.equal(await imapLoginAs(t, carol, PASSWORD), true);
    // an IMAP session open before the lock is ended by it
    const open = new ImapFlow({
      host: '127.0.0.1',
      port: t.retrieval.ports.imaps,
      secure: true,
      tls: { rejectUnauthorized: false, servername: HOST },
      auth: { user: carol, pass: PASSWORD },
      logger: false,
    });
    open.on('error', () => undefined);
    await open.connect();
    const closed = new Promise<void>((resolve) => open.once('close', () => resolve()));
    const lock = await admin.post(`/api/admin/accounts/${enc(carol)}/lock`);
    assert.deepEqual([lock.status, lock.json.locked, lock.json.sessionsEnded], [200, true, 1]);
    await closed;
    assert.equal(await imapLoginAs(t, carol, PASSWORD), false);
    assert.equal((await web.get('/api/account')).status, 401);
    assert.equal((await client().login(carol)).status, 401);
    assert.ok((await admin.get('/api/admin/accounts?q=carol')).json.accounts[0].locked);
    assert.equal((await admin.post(`/api/admin/accounts/${enc(carol)}/unlock`)).status, 200);
    assert.equal(await imapLoginAs(t, carol, PASSWORD), true);

    const self = await admin.post(`/api/admin/accounts/${enc(ALICE)}/lock`);
    assert.deepEqual(
      [self.status, self.json.message],
      [409, 'You cannot lock the account you are logged in with'],
    );
    const reset = await admin.post(`/api/admin/accounts/${enc(carol)}/two-factor/reset`);
    assert.deepEqual(
      [reset.status, reset.json.message],
      [400, 'Two-factor login is not on for carol@example.test'],
    );
    const missing = await admin.post(`/api/admin/accounts/${enc('nobody@example.test')}/lock`);
    assert.deepEqual(
      [missing.status, missing.json.message],
      [404, 'Account nobody@example.test does not exist'],
    );
    assert.equal((await admin.req('DELETE', `/api/admin/accounts/${enc(carol)}`)).status, 200);
    assert.equal(await t.p.directory.accountExists(carol), false);
  },
);

test(
  'an admin cannot lock or delete their own account under another spelling of its address',
  { timeout: 60_000 },
  async () => {
    // root@münchen.test, stored (and logged in) as its ASCII form
    await t.p.directory.addDomain('münchen.test');
    const root = 'root@xn--mnchen-3ya.test';
    await addAccount(t.p.directory, root);
    await t.p.directory.setAdmin(root, true);
    const web = client();
    assert.equal((await web.login(root)).status, 200);
    for (const spelling of ['"root"@xn--mnchen-3ya.test', 'ROOT@MÜNCHEN.test', 'root@münchen.test']) {
      const lock = await web.post(`/api/admin/accounts/${enc(spelling)}/lock`);
      assert.deepEqual(
        [spelling, lock.status, lock.json.message],
        [spelling, 409, 'You cannot lock the account you are logged in with'],
      );
      const del = await web.req('DELETE', `/api/admin/accounts/${enc(spelling)}`);
      assert.deepEqual(
        [spelling, del.status, del.json.message],
        [spelling, 409, 'You cannot delete the account you are logged in with'],
      );
      const role = await web.post(`/api/admin/accounts/${enc(spelling)}/admin`, { admin: false });
      assert.deepEqual(
        [spelling, role.status, role.json.message],
        [spelling, 409, 'You cannot take the admin role from the account you are logged in with'],
      );
      const passwd = await web.post(`/api/admin/accounts/${enc(spelling)}/password`, {
        password: 'a new and long passphrase',
      });
      assert.deepEqual(
        [spelling, passwd.status, passwd.json.message],
        [
          spelling,
          409,
          'You cannot set the password of the account you are logged in with: change it on your account page, which asks for the current one',
        ],
      );
    }
    assert.equal(await t.p.directory.accountExists(root), true);
    assert.equal((await t.p.directory.accountRecord(root))?.locked, undefined);
    assert.equal(await t.p.directory.isAdmin(root), true);
    assert.equal(await t.p.directory.authenticate(root, PASSWORD), root);
    assert.equal((await web.get('/api/admin/domains')).status, 200);
  },
);

test(
  'the admin role given and taken, and a password set, as the CLI does; each audited',
  { timeout: 60_000 },
  async () => {
    const hedy = 'hedy@example.test';
    await addAccount(t.p.directory, hedy);
    const web = client();
    assert.equal((await web.login(hedy)).status, 200);
    assert.equal((await web.get('/api/admin/domains')).status, 403);

    const grant = await admin.post(`/api/admin/accounts/${enc('Hedy@Example.test')}/admin`, { admin: true });
    assert.deepEqual([grant.status, grant.json], [200, { account: hedy, admin: true }]);
    assert.equal((await web.get('/api/account')).json.admin, true);
    assert.equal((await web.get('/api/admin/domains')).status, 200);
    const revoke = await admin.post(`/api/admin/accounts/${enc(hedy)}/admin`, { admin: false });
    assert.deepEqual([revoke.status, revoke.json], [200, { account: hedy, admin: false }]);
    assert.equal((await web.get('/api/admin/domains')).status, 403);
    const bad = await admin.post(`/api/admin/accounts/${enc(hedy)}/admin`, { admin: 'yes' });
    assert.deepEqual([bad.status, bad.json.message], [400, 'admin: expected true or false']);
    const nobody = await admin.post(`/api/admin/accounts/${enc('nobody@example.test')}/admin`, {
      admin: true,
    });
    assert.deepEqual(
      [nobody.status, nobody.json.message],
      [404, 'Account nobody@example.test does not exist'],
    );

    // the directory's strength rules, in the CLI's sentence; nothing changes
    const weak = await admin.post(`/api/admin/accounts/${enc(hedy)}/password`, { password: 'short' });
    assert.deepEqual(
      [weak.status, weak.json.message],
      [400, 'Password is too short (at least 10 characters)'],
    );
    assert.equal((await web.get('/api/account')).status, 200);
    const fresh = 'a brand new passphrase';
    const set = await admin.post(`/api/admin/accounts/${enc(hedy)}/password`, { password: fresh });
    assert.deepEqual([set.status, set.json], [200, { account: hedy }]);
    // her sessions ended; the old password logs in nowhere, the new one everywhere
    assert.equal((await web.get('/api/account')).status, 401);
    assert.equal((await client().login(hedy)).status, 401);
    assert.equal((await client().login(hedy, fresh)).status, 200);
    assert.equal(await imapLoginAs(t, hedy, PASSWORD), false);
    assert.equal(await imapLoginAs(t, hedy, fresh), true);

    const audit = (await admin.get('/api/admin/audit?limit=3')).json.entries as (AuditRow & {
      actor: string;
    })[];
    assert.deepEqual(
      audit.map((e) => [e.actor, e.action, e.target]),
      [
        [ALICE, 'account.passwd', hedy],
        [ALICE, 'account.admin.revoke', hedy],
        [ALICE, 'account.admin.grant', hedy],
      ],
    );
  },
);

test(
  'a domain or account named in Unicode is answered as it is stored, and found',
  { timeout: 60_000 },
  async () => {
    assert.equal(
      (await admin.post('/api/admin/domains', { domain: 'Zürich.test', dkim: false })).status,
      200,
    );
    const records = await admin.get(`/api/admin/domains/${enc('Zürich.Test')}/records`);
    assert.deepEqual([records.status, records.json.domain], [200, 'xn--zrich-kva.test']);
    assert.equal(records.json.records[0].name, 'xn--zrich-kva.test');
    const uli = 'uli@xn--zrich-kva.test';
    await addAccount(t.p.directory, uli);
    const apps = await admin.get(`/api/admin/accounts/${enc('Uli@Zürich.test')}/app-passwords`);
    assert.deepEqual([apps.status, apps.json.account], [200, uli]);
    // found as the operator writes the domain, and as it is stored
    for (const needle of ['ZÜRICH', 'uli@zür', 'xn--zrich']) {
      const found = await admin.get('/api/admin/accounts' + q({ q: needle, usage: '0' }));
      assert.deepEqual(
        [needle, found.json.accounts.map((a: { address: string }) => a.address)],
        [needle, [uli]],
      );
    }
  },
);

test(
  "the CLI's user passwd, lock and del end the account's webmail sessions",
  { timeout: 60_000 },
  async () => {
    const dave = 'frank@example.test';
    await addAccount(t.p.directory, dave);
    const cli = new Operations(t.p.redis.redis, 'cli:root');
    const signedIn = async () => {
      const web = client();
      assert.equal((await web.login(dave)).status, 200);
      assert.equal((await web.get('/api/account')).status, 200);
      return web;
    };
    let web = await signedIn();
    await cli.setPassword(dave, 'a new password from the admin');
    assert.equal((await web.get('/api/account')).status, 401);

    await cli.setPassword(dave, PASSWORD);
    web = await signedIn();
    assert.deepEqual(await cli.lockUser(dave), { account: dave, sessionsEnded: 1 });
    assert.equal((await web.get('/api/account')).status, 401);
    await cli.unlockUser(dave);

    web = await signedIn();
    await cli.delUser(dave);
    assert.equal((await web.get('/api/account')).status, 401);
  },
);

test(
  "a user del whose clean-up fails has ended the account's sessions and says what is left",
  { timeout: 60_000 },
  async () => {
    const gina = 'gina@example.test';
    await addAccount(t.p.directory, gina);
    const web = client();
    assert.equal((await web.login(gina)).status, 200);
    assert.equal((await web.get('/api/account')).status, 200);
    // Redis fails the clean-up after the account record (the scan for failed-login locks)
    const redis = t.p.redis.redis;
    const failing = new Proxy(redis, {
      get: (target, prop, receiver) =>
        prop === 'scan'
          ? () => Promise.reject(new Error('Connection is closed.'))
          : (Reflect.get(target, prop, receiver) as unknown),
    });
    // the deletion happened: a warning, not an error, names what is left
    const del = await new Operations(failing, 'cli:root').delUser(gina);
    assert.equal(
      del.warning,
      `account ${gina} is deleted, but its failed-login counts were not cleared and its out-of-office reply markers were not removed (Redis: Connection is closed.); deleting it again finishes the clean-up`,
    );
    assert.equal(await t.p.directory.accountExists(gina), false);
    assert.equal((await web.get('/api/account')).status, 401);
  },
);

test(
  "an account is not created while an earlier deletion's clean-up still fails: 503, and why",
  { timeout: 60_000 },
  async () => {
    const hana = 'hana@example.test';
    const redis = t.p.redis.redis;
    // an earlier deletion left its sessions to end, and ending them fails (WRONGTYPE)
    await redis.hset('admin:account-cleanup', hana, JSON.stringify(['sessions']));
    await redis.set(`webmail:sessions:${hana}`, 'not a set');
    const refused = await admin.post('/api/admin/accounts', { address: hana, password: PASSWORD });
    assert.equal(refused.status, 503);
    assert.match(
      String(refused.json.message),
      /^Account hana@example\.test cannot be created yet: .*its webmail sessions were not ended/,
    );
    assert.equal(await t.p.directory.accountExists(hana), false);
    // once Redis answers, the same request finishes the clean-up and creates the account
    await redis.del(`webmail:sessions:${hana}`);
    const created = await admin.post('/api/admin/accounts', { address: hana, password: PASSWORD });
    assert.equal(created.status, 200);
    assert.equal(await redis.hget('admin:account-cleanup', hana), null);
  },
);

test(
  'a deleted account leaves nothing to a new account of its address: app passwords, forwarding',
  { timeout: 60_000 },
  async () => {
    const erin = 'erin@example.test';
    await addAccount(t.p.directory, erin);
    const { secret } = await new Operations(t.p.redis.redis, 'cli:root').createAppPassword(erin, 'phone');
    const old = client();
    assert.equal((await old.login(erin)).status, 200);
    const fwd = { targets: ['erin@elsewhere.test'], keepCopy: false };
    assert.equal((await old.post('/api/account/forwarding', fwd)).status, 200);
    assert.equal(await imapLoginAs(t, erin, secret), true);

    assert.equal((await admin.req('DELETE', `/api/admin/accounts/${enc(erin)}`)).status, 200);
    const again = await admin.post('/api/admin/accounts', { address: erin, password: PASSWORD });
    assert.equal(again.status, 200);
    assert.equal(await imapLoginAs(t, erin, secret), false);
    assert.deepEqual(
      (await admin.get(`/api/admin/accounts/${enc(erin)}/app-passwords`)).json.appPasswords,
      [],
    );
    const owner = client();
    assert.equal((await owner.login(erin)).status, 200);
    assert.deepEqual((await owner.get('/api/account/forwarding')).json, { targets: [], keepCopy: true });
    assert.deepEqual((await owner.get('/api/account/logins')).json.logins.length, 1);
  },
);

test(
  "a deleted account leaves nothing to a new account of its address: the webmail's choices, uploads, sender lists",
  { timeout: 60_000 },
  async () => {
    const fay = 'fay@example.test';
    const sender = 'news@shop.example';
    const cli = new Operations(t.p.redis.redis, 'cli:root');
    const rules = new MailRules(t.p.redis.redis);
    await addAccount(t.p.directory, fay);
    // the mailbox on disk outlives the account (user del leaves it): so does this newsletter
    await sendRaw(t.p, fay, newsletter('http://127.0.0.5:1'));
    const old = client();
    assert.equal((await old.login(fay)).status, 200);
    const { uid } = (await old.get('/api/messages' + q({ folder: 'INBOX' }))).json.rows[0] as { uid: number };
    const privacy = async (c: WebClient) =>
      (await c.get(`/api/messages/${uid}` + q({ folder: 'INBOX' }))).json.privacy.remoteAllowed as boolean;
    assert.equal((await old.post('/api/remote-senders', { address: sender, allow: true })).status, 200);
    assert.equal(await privacy(old), true);
    const up = await old.req('POST', '/api/uploads', {
      body: Buffer.from("the old owner's draft attachment"),
      headers: { 'content-type': 'application/octet-stream', 'x-filename': 'notes.txt' },
    });
    assert.equal(up.status, 200);
    const away = { enabled: true, subject: 'Away', body: 'Back soon', start: null, end: null, days: 7 };
    assert.equal((await old.post('/api/account/vacation', away)).status, 200);
    // what delivery records when the out-of-office reply answers a sender
    assert.equal(await rules.claimReply(fay, sender, 7), true);
    await cli.policy().userListAdd(fay, 'block', 'ex@partner.example');
    await cli.policy().userListAdd(fay, 'allow', sender);

    assert.equal((await admin.req('DELETE', `/api/admin/accounts/${enc(fay)}`)).status, 200);
    assert.equal((await admin.post('/api/admin/accounts', { address: fay, password: PASSWORD })).status, 200);

    const owner = client();
    assert.equal((await owner.login(fay)).status, 200);
    // remote content of that sender is blocked again, as for any new account
    assert.equal(await privacy(owner), false);
    // the old upload is gone (and takes no room under the new owner's cap)
    assert.equal((await owner.req('DELETE', `/api/uploads/${up.json.id}`)).status, 404);
    assert.equal((await owner.get('/api/account/vacation')).json.enabled, false);
    // the new owner's out-of-office reply would answer that sender
    assert.equal(await rules.claimReply(fay, sender, 7), true);
    assert.deepEqual(await cli.policy().userList(fay, 'block'), []);
    assert.deepEqual(await cli.policy().userList(fay, 'allow'), []);
  },
);

test('an account deleted twice at once is deleted, and audited, once', { timeout: 60_000 }, async () => {
  const ivy = 'ivy@example.test';
  for (let round = 0; round < 3; round++) {
    await addAccount(t.p.directory, ivy);
    const tries = await Promise.all(
      [1, 2, 3].map(() => admin.req('DELETE', `/api/admin/accounts/${enc(ivy)}`)),
    );
    assert.deepEqual(
      tries.map((r) => r.status).filter((s) => s === 200),
      [200],
      JSON.stringify(tries.map((r) => r.json)),
    );
    for (const r of tries.filter((r) => r.status !== 200))
      assert.match(
        `${r.status} ${r.json.message}`,
        /^(409 Account ivy@example\.test is being deleted already|404 Account ivy@example\.test does not exist)$/,
      );
    const audit = (await admin.get('/api/admin/audit?limit=20')).json.entries as AuditRow[];
    assert.equal(audit.filter((e) => e.action === 'account.del' && e.target === ivy).length, round + 1);
  }
});

/**
 * Three deletions of the same thing at once, in three rounds: one deletes it, the others
 * are told it does not exist (`gone`), and the audit log has one `action` a round.
 */
async function deletedOnceAtOnce(opts: {
  create: () => Promise<WebResponse>;
  del: () => Promise<WebResponse>;
  action: string;
  target: string;
  gone: string;
}): Promise<void> {
  for (let round = 0; round < 3; round++) {
    assert.equal((await opts.create()).status, 200);
    const tries = await Promise.all([1, 2, 3].map(() => opts.del()));
    assert.deepEqual(tries.map((r) => `${r.status} ${r.json.message ?? ''}`).sort(), [
      '200 ',
      `404 ${opts.gone}`,
      `404 ${opts.gone}`,
    ]);
    const audit = (await admin.get('/api/admin/audit?limit=20')).json.entries as AuditRow[];
    const found = audit.filter((e) => e.action === opts.action && e.target === opts.target);
    assert.equal(found.length, round + 1);
  }
}

test('an alias deleted twice at once is deleted, and audited, once', { timeout: 60_000 }, async () => {
  const source = 'twice@example.test';
  await deletedOnceAtOnce({
    create: () => admin.post('/api/admin/aliases', { source, targets: [BOB] }),
    del: () => admin.post('/api/admin/aliases/delete', { source }),
    action: 'alias.del',
    target: source,
    gone: `Alias ${source} does not exist`,
  });
});

test('a domain deleted twice at once is deleted, and audited, once', { timeout: 60_000 }, async () => {
  const domain = 'twice.test';
  await deletedOnceAtOnce({
    create: () => admin.post('/api/admin/domains', { domain, dkim: false }),
    del: () => admin.req('DELETE', `/api/admin/domains/${domain}`),
    action: 'domain.del',
    target: domain,
    gone: `Domain ${domain} does not exist`,
  });
});

test('unlock also lifts the locks of failed logins', { timeout: 60_000 }, async () => {
  const gail = 'gail@example.test';
  await addAccount(t.p.directory, gail);
  for (let i = 0; i < 5; i++) assert.equal(await imapLoginAs(t, gail, 'a wrong guess'), false);
  assert.equal(await imapLoginAs(t, gail, PASSWORD), false);
  assert.equal((await admin.post(`/api/admin/accounts/${enc(gail)}/unlock`)).status, 200);
  assert.equal(await imapLoginAs(t, gail, PASSWORD), true);
});

test('aliases and catch-alls, a user’s app passwords', { timeout: 60_000 }, async () => {
  const add = await admin.post('/api/admin/aliases', { source: 'info@example.test', targets: [BOB] });
  assert.deepEqual(add.json, { source: 'info@example.test', targets: [BOB], added: [BOB] });
  // the answer names every target the alias delivers to now, not only those just added
  const more = await admin.post('/api/admin/aliases', { source: 'INFO@example.test', targets: [ALICE] });
  assert.deepEqual(more.json, { source: 'info@example.test', targets: [ALICE, BOB], added: [ALICE] });
  assert.equal(
    (await admin.post('/api/admin/aliases', { source: '@example.test', targets: [ALICE] })).status,
    200,
  );
  const list = (await admin.get('/api/admin/aliases?domain=example.test')).json.aliases;
  assert.deepEqual(
    list.map((a: { source: string }) => a.source),
    ['@example.test', 'info@example.test'],
  );
  const noTargets = await admin.post('/api/admin/aliases', { source: 'x@example.test', targets: [] });
  assert.deepEqual(
    [noTargets.status, noTargets.json.message],
    [400, 'targets: expected at least one target'],
  );
  assert.equal((await admin.post('/api/admin/aliases/delete', { source: '@example.test' })).status, 200);
  assert.equal((await admin.post('/api/admin/aliases/delete', { source: 'info@example.test' })).status, 200);
  const gone = await admin.post('/api/admin/aliases/delete', { source: 'info@example.test' });
  assert.deepEqual([gone.status, gone.json.message], [404, 'Alias info@example.test does not exist']);

  const dave = 'dave@example.test';
  await addAccount(t.p.directory, dave);
  const d = client();
  await d.login(dave);
  const { secret } = (await d.post('/api/account/app-passwords', { name: 'phone', password: PASSWORD })).json;
  assert.equal(await imapLoginAs(t, dave, secret), true);
  const apps = await admin.get(`/api/admin/accounts/${enc(dave)}/app-passwords`);
  assert.deepEqual(
    apps.json.appPasswords.map((p: { name: string }) => p.name),
    ['phone'],
  );
  const revoked = await admin.post(`/api/admin/accounts/${enc(dave)}/app-passwords/revoke`, {
    name: 'phone',
  });
  assert.equal(revoked.status, 200);
  assert.equal(await imapLoginAs(t, dave, secret), false);
  const again = await admin.post(`/api/admin/accounts/${enc(dave)}/app-passwords/revoke`, { name: 'phone' });
  assert.equal(again.status, 404);
  const long = await admin.post(`/api/admin/accounts/${enc(dave)}/app-passwords/revoke`, {
    name: 'n'.repeat(65),
  });
  assert.deepEqual(
    [long.status, long.json.message],
    [400, 'name: a name of 1-64 letters, digits, spaces or ._@-'],
  );
});

test('DKIM: generate, rotate, activate once DNS has the record, retire', { timeout: 60_000 }, async () => {
  await admin.post('/api/admin/domains', { domain: 'rotate.test', dkim: false });
  const gen = await admin.post('/api/admin/dkim', {
    domain: 'rotate.test',
    algorithm: 'ed25519',
    selector: 'first',
  });
  assert.deepEqual([gen.status, gen.json.key.selector, gen.json.key.signing], [200, 'first', true]);
  const rot = await admin.post('/api/admin/dkim/rotate', { domain: 'rotate.test', algorithm: 'ed25519' });
  assert.equal(rot.status, 200, rot.text);
  const next = rot.json.key as {
    selector: string;
    signing: boolean;
    pending: boolean;
    record: { name: string; value: string };
  };
  // the new key waits for its record; the old one keeps signing meanwhile
  assert.deepEqual([next.signing, next.pending], [false, true]);
  assert.deepEqual(
    rot.json.replaces.map((k: { selector: string; signing: boolean }) => [k.selector, k.signing]),
    [['first', true]],
  );
  const records = (await admin.get('/api/admin/domains/rotate.test/records')).json.records;
  assert.deepEqual(
    records
      .filter((r: { purpose: string }) => r.purpose.startsWith('dkim:'))
      .map((r: { purpose: string }) => r.purpose)
      .sort(),
    ['dkim:first', `dkim:${next.selector}`].sort(),
  );
  const early = await admin.post('/api/admin/dkim/activate', {
    domain: 'rotate.test',
    selector: next.selector,
  });
  assert.equal(early.status, 400, early.text);
  assert.match(
    early.json.message,
    new RegExp(`^No TXT record at ${next.selector}\\._domainkey\\.rotate\\.test yet: publish`),
  );
  t.p.dns.set(next.record.name, { SERVFAIL: true });
  const failing = await admin.post('/api/admin/dkim/activate', {
    domain: 'rotate.test',
    selector: next.selector,
  });
  assert.deepEqual([failing.status, failing.json.error], [503, 'dns_unavailable']);
  const old = await admin.post('/api/admin/dkim/retire', { domain: 'rotate.test', selector: 'first' });
  assert.equal(old.status, 400);
  assert.equal(
    old.json.message,
    `First is the ed25519 key that signs mail of rotate.test until ${next.selector} is activated: run mailyard dkim activate rotate.test ${next.selector} first`,
  );

  t.p.dns.set(next.record.name, { TXT: [next.record.value] });
  const activated = await admin.post('/api/admin/dkim/activate', {
    domain: 'rotate.test',
    selector: next.selector,
  });
  assert.equal(activated.status, 200, activated.text);
  assert.deepEqual([activated.json.activated, activated.json.key.signing], [true, true]);
  const signing = await admin.post('/api/admin/dkim/retire', {
    domain: 'rotate.test',
    selector: next.selector,
  });
  assert.equal(signing.status, 400);
  assert.match(signing.json.message, /is the ed25519 key that signs mail of rotate\.test; rotate first/);
  const retired = await admin.post('/api/admin/dkim/retire', { domain: 'rotate.test', selector: 'first' });
  assert.deepEqual([retired.status, retired.json.retired.selector], [200, 'first']);
  const algo = await admin.post('/api/admin/dkim', { domain: 'rotate.test', algorithm: 'dsa' });
  assert.deepEqual([algo.status, algo.json.message], [400, 'algorithm: expected rsa or ed25519']);
  const keys = (await admin.get('/api/admin/dkim?domain=rotate.test')).json.keys;
  assert.deepEqual(
    keys.map((k: { selector: string }) => k.selector),
    [next.selector],
  );
});

test(
  'a policy list saved from a copy changed meanwhile is a 409 saying what it is now, not overwritten',
  { timeout: 60_000 },
  async () => {
    const url = '/api/admin/policy/lists/smtpd_helo_restrictions';
    await admin.req('PUT', url, { json: { entries: ['permit_mynetworks'] } });
    const loaded = (await admin.get('/api/admin/policy')).json.lists.find(
      (l: { name: string }) => l.name === 'smtpd_helo_restrictions',
    ).entries as string[];
    // meanwhile another administrator (mailyard policy add) changes the list
    await new Operations(t.p.redis.redis, 'cli:root')
      .policy()
      .add('smtpd_helo_restrictions', 'reject_invalid_helo_hostname');
    const stale = await admin.req('PUT', url, {
      json: { entries: [...loaded, 'reject_non_fqdn_helo_hostname'], previous: loaded },
    });
    assert.deepEqual(
      [stale.status, stale.json.error, stale.json.message],
      [
        409,
        'conflict',
        'Restriction list smtpd_helo_restrictions was changed meanwhile, it is now: permit_mynetworks, reject_invalid_helo_hostname; load it again and redo the change',
      ],
    );
    const now = (await admin.get('/api/admin/policy')).json.lists.find(
      (l: { name: string }) => l.name === 'smtpd_helo_restrictions',
    ).entries as string[];
    assert.deepEqual(now, ['permit_mynetworks', 'reject_invalid_helo_hostname']);
    const saved = await admin.req('PUT', url, {
      json: { entries: [...now, 'reject_non_fqdn_helo_hostname'], previous: now },
    });
    assert.deepEqual(
      [saved.status, saved.json.entries],
      [200, ['permit_mynetworks', 'reject_invalid_helo_hostname', 'reject_non_fqdn_helo_hostname']],
    );
    assert.equal((await admin.post(`${url}/reset`)).status, 200);
  },
);

test(
  'policy lists and access tables: an unknown restriction is a 400, a missing entry a 404',
  { timeout: 60_000 },
  async () => {
    const policy = (await admin.get('/api/admin/policy')).json;
    assert.ok(policy.lists.some((l: { name: string }) => l.name === 'smtpd_client_restrictions'));
    assert.ok(policy.checks.length > 5);
    const unknown = await admin.req('PUT', '/api/admin/policy/lists/smtpd_client_restrictions', {
      json: { entries: ['permit_mynetworks', 'reject_everything_bad'] },
    });
    assert.deepEqual(
      [unknown.status, unknown.json.message],
      [400, 'Unknown restriction "reject_everything_bad" (mailyard policy checks lists the known ones)'],
    );
    const badList = await admin.req('PUT', '/api/admin/policy/lists/smtpd_nothing', {
      json: { entries: [] },
    });
    assert.equal(badList.status, 400);
    assert.match(badList.json.message, /^Unknown restriction list "smtpd_nothing"/);
    const set = await admin.req('PUT', '/api/admin/policy/lists/smtpd_client_restrictions', {
      json: { entries: ['permit_mynetworks', 'check_client_access client_access'] },
    });
    assert.deepEqual(set.json.entries, ['permit_mynetworks', 'check_client_access client_access']);
    const acc = await admin.post('/api/admin/policy/access/client_access', {
      key: '192.0.2.0/24',
      action: 'REJECT spam source',
    });
    assert.equal(acc.status, 200, acc.text);
    const badAction = await admin.post('/api/admin/policy/access/client_access', {
      key: '192.0.2.9',
      action: 'EXPLODE',
    });
    assert.equal(badAction.status, 400);
    assert.deepEqual((await admin.get('/api/admin/policy/access/client_access')).json.entries, [
      { key: '192.0.2.0/24', action: 'REJECT spam source' },
    ]);
    assert.equal(
      (await admin.post('/api/admin/policy/access/client_access/delete', { key: '192.0.2.0/24' })).status,
      200,
    );
    // a key removed as written, answered and audited as stored (and as its addition was)
    await admin.post('/api/admin/policy/access/client_access', { key: '192.0.2.7', action: 'OK' });
    const del = await admin.post('/api/admin/policy/access/client_access/delete', { key: '192.0.2.7' });
    assert.deepEqual([del.status, del.json.deleted], [200, '192.0.2.7/32']);
    // removed again: not there, as a deleted alias or account is not
    const gone = await admin.post('/api/admin/policy/access/client_access/delete', { key: '192.0.2.7' });
    assert.deepEqual(
      [gone.status, gone.json.error, gone.json.message],
      [404, 'not_found', 'Access table client_access has no entry 192.0.2.7/32'],
    );
    const [deleted, added] = (await admin.get('/api/admin/audit?limit=2')).json.entries;
    assert.deepEqual(
      [deleted.action, deleted.detail.key, added.action, added.detail.key],
      ['policy.access.del', '192.0.2.7/32', 'policy.access.set', '192.0.2.7/32'],
    );
    // one entry removed, then removed again: not there, a 404 naming the list and the entry
    const removed = await admin.post('/api/admin/policy/lists/smtpd_client_restrictions/delete', {
      entry: 'check_client_access client_access',
    });
    assert.deepEqual([removed.status, removed.json.entries], [200, ['permit_mynetworks']]);
    const again = await admin.post('/api/admin/policy/lists/smtpd_client_restrictions/delete', {
      entry: 'check_client_access  client_access',
    });
    assert.deepEqual(
      [again.status, again.json.error, again.json.message],
      [
        404,
        'not_found',
        'Restriction list smtpd_client_restrictions has no entry check_client_access client_access',
      ],
    );
    const [removal] = (await admin.get('/api/admin/audit?limit=1')).json.entries;
    assert.deepEqual(
      [removal.action, removal.target, removal.detail],
      ['policy.remove', 'smtpd_client_restrictions', { entry: 'check_client_access client_access' }],
    );
    assert.equal((await admin.post('/api/admin/policy/lists/smtpd_client_restrictions/reset')).status, 200);
    const explain = await admin.get('/api/admin/policy/explain/NOPE123');
    assert.deepEqual(
      [explain.status, explain.json.message],
      [404, 'Nothing recorded for NOPE123 (refusals are kept for EXPLAIN_TTL, 7 days by default)'],
    );
  },
);

test(
  'the outbound queue: empty list; unknown ids are 404 for show, retry and delete',
  { timeout: 60_000 },
  async () => {
    const list = await admin.get('/api/admin/queue');
    assert.deepEqual([list.status, list.json.messages], [200, []]);
    for (const [method, path] of [
      ['GET', '/api/admin/queue/ABC123'],
      ['POST', '/api/admin/queue/ABC123/retry'],
      ['DELETE', '/api/admin/queue/ABC123'],
    ] as const) {
      const res = await admin.req(method, path, method === 'POST' ? { json: {} } : {});
      assert.deepEqual(
        [path, res.status, res.json.message],
        [path, 404, 'No deferred message with queue id ABC123'],
      );
    }
    assert.equal((await admin.get('/api/admin/queue/bad%20id')).status, 400);
  },
);

test(
  'the audit log names the admin for each action, newest first, in pages',
  { timeout: 60_000 },
  async () => {
    await admin.post('/api/admin/domains', { domain: 'audited.test', dkim: false });
    await admin.req('DELETE', '/api/admin/domains/audited.test');
    const page = (await admin.get('/api/admin/audit?limit=2')).json;
    assert.deepEqual(
      page.entries.map((e: { actor: string; action: string; target: string }) => [
        e.actor,
        e.action,
        e.target,
      ]),
      [
        [ALICE, 'domain.del', 'audited.test'],
        [ALICE, 'domain.add', 'audited.test'],
      ],
    );
    assert.equal(page.more, true);
    const next = (await admin.get('/api/admin/audit?limit=2&offset=2')).json;
    assert.equal(next.offset, 2);
    assert.equal((await admin.get('/api/admin/audit?limit=5000')).status, 400);
  },
);

test('a directory that cannot be read is a 503, never "not an admin"', { timeout: 60_000 }, async () => {
  const down = unreachableRedis();
  const broken = await t.another({}, { directory: new Directory(down) });
  const c = new WebClient(broken.port, t.ca);
  assert.equal((await c.login(ALICE)).status, 200);
  const res = await c.get('/api/admin/domains');
  assert.deepEqual([res.status, res.json.error], [503, 'unavailable']);
  down.disconnect();
});

test(
  'a deferred message: listed, shown, retried and deleted, each change audited',
  { timeout: 60_000 },
  async () => {
    // deferred as outbound-relay defers: into a delay queue (the longest, so it stays there), and indexed
    const bus = await testBus(t.p.env.AMQP_URL!);
    try {
      await deferredMail(bus, t.p.redis.redis, 'QDELETE1');
      await deferredMail(bus, t.p.redis.redis, 'QRETRY01');
      await waitFor(async () => (await queueDepth(t.p.vhost.name, DEFERRED_QUEUE)) === 2, {
        what: 'two deferred messages in their delay queue',
      });
      const list = await admin.get('/api/admin/queue');
      assert.deepEqual(list.json.messages.map((m: { queueId: string }) => m.queueId).sort(), [
        'QDELETE1',
        'QRETRY01',
      ]);
      const shown = await admin.get('/api/admin/queue/QDELETE1');
      assert.equal(shown.status, 200, shown.text);
      assert.match(shown.json.headers, /^Subject: waiting QDELETE1$/m);
      assert.equal((await admin.req('DELETE', '/api/admin/queue/QDELETE1')).status, 200);
      const retried = await admin.post('/api/admin/queue/QRETRY01/retry');
      assert.deepEqual([retried.status, retried.json.retried], [200, 1]);
      assert.deepEqual((await admin.get('/api/admin/queue')).json.messages, []);
      const audit = (await admin.get('/api/admin/audit?limit=2')).json.entries;
      assert.deepEqual(
        audit.map((e: { actor: string; action: string; target: string }) => [e.actor, e.action, e.target]),
        [
          [ALICE, 'queue.retry', 'QRETRY01'],
          [ALICE, 'queue.delete', 'QDELETE1'],
        ],
      );
    } finally {
      await bus.stop();
    }
  },
);

test(
  'dead letters: listed, shown, requeued where they came from or kept with why, deleted; each audited',
  { timeout: 90_000 },
  async () => {
    const bus = await testBus(t.p.env.AMQP_URL!);
    const letters = async () => {
      const res = await admin.get('/api/admin/dead-letters');
      assert.equal(res.status, 200, res.text);
      return res.json.letters as AdminDeadLetter[];
    };
    try {
      assert.deepEqual(await letters(), []);
      // delivery gave this one up (an alias over ALIAS_EXPANSION_LIMIT); bob has not got it
      const held = newQueueId();
      const reason =
        'RecipientsDeferred: 4.6.0 Alias expansion error: alias expansion of crowd@example.test reached 14 addresses, over the limit of 10';
      await deadMail(bus, { queueId: held, queue: 'delivery', reason, recipients: [BOB], attempts: 5 });
      const policy = 'a policy request nobody waits for any more';
      await deadMessage(bus, policy, { queue: 'policy', reason: 'PoisonMessageError: redelivered 2 times' });
      const before = t.p.inbox(BOB).length;

      const listed = await letters();
      assert.deepEqual(
        listed.map((l) => l.originalQueue),
        ['delivery', 'policy'],
      );
      const [mail, request] = listed as [AdminDeadLetter, AdminDeadLetter];
      const { deadLetteredAt, size, ...facts } = mail;
      assert.deepEqual(facts, {
        queueId: held,
        originalQueue: 'delivery',
        requeueable: true,
        reason,
        attempts: 5,
        mailFrom: 'sender@remote.test',
        recipients: [BOB],
      });
      assert.ok(Date.now() - Date.parse(deadLetteredAt!) < 60_000, deadLetteredAt!);
      assert.ok(size > 0);
      assert.match(request.queueId, /^dl-[0-9a-f]{12}$/);
      assert.deepEqual([request.requeueable, request.mailFrom], [false, null]);

      const shown = await admin.get(`/api/admin/dead-letters/${held}`);
      assert.equal(shown.status, 200, shown.text);
      assert.deepEqual(shown.json.letters, [mail]);
      assert.match(shown.json.headers, new RegExp(`^Subject: dead letter ${held}$`, 'm'));
      assert.doesNotMatch(shown.json.headers, /Hello/, 'the header block only');
      assert.equal((await admin.get(`/api/admin/dead-letters/${request.queueId}`)).json.headers, policy);

      // a change needs the CSRF token as any other
      const forged = await admin.req('POST', `/api/admin/dead-letters/${held}/requeue`, {
        json: {},
        csrf: false,
      });
      assert.deepEqual([forged.status, forged.json.error], [403, 'csrf']);

      // sent back to delivery, which now delivers it to bob
      const requeued = await admin.post(`/api/admin/dead-letters/${held}/requeue`);
      assert.deepEqual([requeued.status, requeued.json], [200, { requeued: 1 }]);
      await waitFor(() => t.p.inbox(BOB).length === before + 1, {
        what: 'the requeued letter delivered to bob',
      });
      assert.ok(t.p.inbox(BOB).some((f) => readFileSync(f, 'utf8').includes(`Subject: dead letter ${held}`)));
      assert.deepEqual(
        (await letters()).map((l) => l.queueId),
        [request.queueId],
      );

      // a policy request cannot be sent back: it stays, and the answer says why
      const kept = await admin.post(`/api/admin/dead-letters/${request.queueId}/requeue`);
      assert.deepEqual(
        [kept.status, kept.json.error, kept.json.message, kept.json.requeued],
        [
          409,
          'not_requeued',
          `1 dead letter stayed in the queue: ${request.queueId} (it came from policy, which requeue cannot send to)`,
          0,
        ],
      );
      // all of them: those that can go, go; the rest stay, named
      const outbound = newQueueId();
      await deadMail(bus, {
        queueId: outbound,
        queue: 'outbound',
        reason: 'BusUnavailableError: publish channel closed',
        recipients: ['far@remote.test'],
      });
      const all = await admin.post('/api/admin/dead-letters/requeue-all');
      assert.deepEqual(
        [all.status, all.json.message, all.json.requeued, all.json.kept],
        [
          409,
          `1 dead letter requeued; 1 dead letter stayed in the queue: ${request.queueId} (it came from policy, which requeue cannot send to)`,
          1,
          [{ queueId: request.queueId, why: 'it came from policy, which requeue cannot send to' }],
        ],
      );
      assert.ok(
        (await queueIdsIn(bus, 'outbound')).includes(outbound),
        'the outbound letter back in outbound',
      );

      const deleted = await admin.req('DELETE', `/api/admin/dead-letters/${request.queueId}`);
      assert.deepEqual([deleted.status, deleted.json], [200, { deleted: request.queueId, letters: 1 }]);
      assert.deepEqual(await letters(), []);
      const nothing = await admin.post('/api/admin/dead-letters/requeue-all');
      assert.deepEqual([nothing.status, nothing.json], [200, { requeued: 0 }]);

      const audit = (await admin.get('/api/admin/audit?limit=3')).json.entries;
      assert.deepEqual(
        audit.map((e: { actor: string; action: string; target: string }) => [e.actor, e.action, e.target]),
        [
          [ALICE, 'queue.dead.delete', request.queueId],
          [ALICE, 'queue.dead.requeue', '*'],
          [ALICE, 'queue.dead.requeue', held],
        ],
      );
    } finally {
      await bus.stop();
    }
  },
);

test('dead letters: unknown ids are 404 for show, requeue and delete', { timeout: 60_000 }, async () => {
  for (const [method, path] of [
    ['GET', '/api/admin/dead-letters/NoSuchQueueId123'],
    ['POST', '/api/admin/dead-letters/NoSuchQueueId123/requeue'],
    ['DELETE', '/api/admin/dead-letters/NoSuchQueueId123'],
  ] as const) {
    const res = await admin.req(method, path, method === 'POST' ? { json: {} } : {});
    assert.deepEqual(
      [path, res.status, res.json.error, res.json.message],
      [path, 404, 'not_found', 'No dead letter with queue id NoSuchQueueId123'],
    );
  }
  assert.equal((await admin.get('/api/admin/dead-letters/bad%20id')).status, 400);
});

test(
  'a broker that cannot be reached: the dead letters are a 503 that says so, never "not found"',
  { timeout: 60_000 },
  async () => {
    const down = await t.another({ amqp_url: `amqp://guest:guest@127.0.0.1:${await freePort()}/` });
    const c = new WebClient(down.port, t.ca);
    assert.equal((await c.login(ALICE)).status, 200);
    for (const [method, path] of [
      ['GET', '/api/admin/dead-letters'],
      ['GET', '/api/admin/dead-letters/ABC123'],
      ['POST', '/api/admin/dead-letters/ABC123/requeue'],
      ['POST', '/api/admin/dead-letters/requeue-all'],
      ['DELETE', '/api/admin/dead-letters/ABC123'],
    ] as const) {
      const res = await c.req(method, path, method === 'POST' ? { json: {} } : {});
      assert.deepEqual([path, res.status, res.json.error], [path, 503, 'unavailable']);
      assert.match(res.json.message, /^The queues are unavailable now: RabbitMQ unreachable at /, path);
    }
  },
);

test(
  'a store that stops answering: the accounts page comes within IMAP_TIMEOUT, usage unknown',
  { timeout: 60_000 },
  async () => {
    const stallable = await webmailOnStallableImap(t);
    try {
      const c = new WebClient(stallable.port, t.ca);
      assert.equal((await c.login(ALICE)).status, 200);
      for (let i = 0; i < 6; i++) await addAccount(t.p.directory, `stuck${i}@example.test`);
      // nothing comes back from the store, greetings included
      stallable.proxy.hold();
      const started = Date.now();
      const listed = await c.get('/api/admin/accounts?q=stuck');
      const took = Date.now() - started;
      assert.equal(listed.status, 200);
      assert.equal(listed.json.total, 6);
      assert.deepEqual(
        listed.json.accounts.map((a: { usage: unknown }) => a.usage),
        [null, null, null, null, null, null],
      );
      // 6 accounts, 4 probes at a time, 5 s each: 10 s without the shared deadline
      assert.ok(took < 8000, `the page took ${took} ms`);
    } finally {
      await stallable.close();
    }
  },
);
