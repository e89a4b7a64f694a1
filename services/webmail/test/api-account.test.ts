// The account page's API: recent logins (from IMAP and the webmail), app passwords with
// their last use, changing the password with the CLI's rules, signing out everywhere.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AppPasswords, LoginGuard, createAuthenticator, type Authenticator } from '@mailyard/auth';
import type { Directory } from '@mailyard/directory';
import { waitFor } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
import { webmailFile } from './file-setup.js';
import { PASSWORD, type WebmailTestbed } from './webmail-harness.js';
import { holdSessions, imapLogin as imapLoginAs, mailPorts } from './mail-clients.js';
import { WebClient, openEvents, type WebResponse } from './web-client.js';

let t: WebmailTestbed;
webmailFile({}, async (f) => {
  t = f.t;
});
const client = () => new WebClient(t.webmail.port, t.ca);

const imapLogin = (user: string, pass: string) => imapLoginAs(t, user, pass);

let longGrace: ReturnType<WebmailTestbed['another']> | undefined;
/**
 * A client of a webmail whose old cookies keep their grace for ten minutes: what ends one
 * sooner is seen ending it, however slowly the test runs.
 */
async function longGraceClient(): Promise<WebClient> {
  longGrace ??= t.another({ session_renewal_grace: '10m' });
  return new WebClient((await longGrace).port, t.ca);
}

/** `c` sets a new password, and goes on with the token its answer carries. */
async function newPassword(c: WebClient): Promise<void> {
  const ok = await c.post('/api/account/password', { current: PASSWORD, password: 'a new long passphrase' });
  assert.equal(ok.status, 200, ok.text);
  c.csrf = ok.json.csrf;
}

/** A client holding `c`'s cookie and token as they are now, from `ip` (another address unless said). */
function copyOf(c: WebClient, ip?: string): WebClient {
  const copy = new WebClient(c.port, t.ca, ip);
  for (const [name, value] of c.cookies) copy.cookies.set(name, value);
  copy.csrf = c.csrf;
  return copy;
}

test('recent logins and the last use of an app password', { timeout: 60_000 }, async () => {
  const account = 'eve@example.test';
  await addAccount(t.p.directory, account);
  const c = client();
  assert.equal((await c.login(account)).status, 200);
  const { secret } = (await c.post('/api/account/app-passwords', { name: 'laptop', password: PASSWORD }))
    .json;
  assert.equal(await imapLogin(account, secret), true);
  const logins = await c.get('/api/account/logins');
  const [imap, web] = logins.json.logins;
  assert.deepEqual([imap.protocol, imap.via, imap.appPassword], ['imap', 'app-password', 'laptop']);
  assert.equal(imap.ip, '127.0.0.1');
  assert.deepEqual([web.protocol, web.via, web.ip], ['webmail', 'password', c.ip]);
  const [laptop] = (await c.get('/api/account/app-passwords')).json.appPasswords;
  assert.equal(laptop.name, 'laptop');
  assert.equal(laptop.lastIp, '127.0.0.1');
  assert.ok(Date.parse(laptop.lastUsed) > Date.now() - 60_000);
  const dup = await c.post('/api/account/app-passwords', { name: 'laptop', password: PASSWORD });
  assert.deepEqual([dup.status, dup.json.error], [409, 'conflict']);
  const bad = await c.post('/api/account/app-passwords', { name: 'a/b', password: PASSWORD });
  assert.equal(bad.status, 400);
  const gone = await c.post('/api/account/app-passwords/revoke', { name: 'nope' });
  assert.deepEqual([gone.status, gone.json.error], [404, 'no_such_app_password']);
});

test(
  'an app password logs in to no webmail, and no login is recorded for it',
  { timeout: 60_000 },
  async () => {
    const account = 'nia@example.test';
    await addAccount(t.p.directory, account);
    const c = client();
    assert.equal((await c.login(account)).status, 200);
    const { secret } = (await c.post('/api/account/app-passwords', { name: 'phone', password: PASSWORD }))
      .json;
    const other = client();
    const refused = await other.login(account, secret);
    assert.deepEqual([refused.status, refused.json.error], [401, 'invalid_credentials']);
    const logins = (await c.get('/api/account/logins')).json.logins as { ip: string }[];
    assert.deepEqual(
      logins.map((l) => l.ip),
      [c.ip],
    );
    const [phone] = (await c.get('/api/account/app-passwords')).json.appPasswords;
    assert.equal(phone.lastUsed, undefined);
  },
);

test('an app password or two-factor enrolment asks for the password again', { timeout: 60_000 }, async () => {
  const account = 'oto@example.test';
  await addAccount(t.p.directory, account);
  const c = client();
  assert.equal((await c.login(account)).status, 200);
  const none = await c.post('/api/account/app-passwords', { name: 'phone' });
  assert.deepEqual([none.status, none.json.error], [400, 'bad_request']);
  const wrong = await c.post('/api/account/app-passwords', { name: 'phone', password: 'not it' });
  assert.deepEqual([wrong.status, wrong.json.error], [403, 'wrong_password']);
  assert.deepEqual((await c.get('/api/account/app-passwords')).json.appPasswords, []);
  const enrol = await c.post('/api/account/two-factor/begin', { password: 'not it' });
  assert.deepEqual([enrol.status, enrol.json.error], [403, 'wrong_password']);
  const ok = await c.post('/api/account/app-passwords', { name: 'phone', password: PASSWORD });
  assert.equal(ok.status, 200, ok.text);
});

test(
  'changing the password: the current one first, the CLI’s strength rules',
  { timeout: 60_000 },
  async () => {
    const account = 'fay@example.test';
    await addAccount(t.p.directory, account);
    const c = client();
    assert.equal((await c.login(account)).status, 200);
    const elsewhere = client();
    assert.equal((await elsewhere.login(account)).status, 200);
    const wrong = await c.post('/api/account/password', {
      current: 'not it at all',
      password: 'a new long passphrase',
    });
    assert.deepEqual([wrong.status, wrong.json.error], [403, 'wrong_password']);
    const weak = await c.post('/api/account/password', { current: PASSWORD, password: 'short' });
    assert.deepEqual(
      [weak.status, weak.json.message],
      [400, 'Password is too short (at least 10 characters)'],
    );
    const noCsrf = await c.req('POST', '/api/account/password', {
      json: { current: PASSWORD, password: 'a new long passphrase' },
      csrf: false,
    });
    assert.equal(noCsrf.status, 403);
    const cookie = c.cookies.get('__Host-mailyard_session')!;
    const ok = await c.post('/api/account/password', {
      current: PASSWORD,
      password: 'a new long passphrase',
    });
    assert.equal(ok.status, 200, ok.text);
    // this session goes on under a new cookie and token; a copy of the old cookie is no good
    const stolen = client();
    stolen.cookies.set('__Host-mailyard_session', cookie);
    assert.equal((await stolen.get('/api/account')).status, 401);
    assert.notEqual(c.cookies.get('__Host-mailyard_session'), cookie);
    assert.notEqual(ok.json.csrf, c.csrf);
    c.csrf = ok.json.csrf;
    assert.equal((await c.post('/api/account/forwarding', { targets: [], keepCopy: true })).status, 200);
    // the account's other sessions end
    assert.equal((await elsewhere.get('/api/account')).status, 401);
    assert.equal(await imapLogin(account, PASSWORD), false);
    assert.equal(await imapLogin(account, 'a new long passphrase'), true);
  },
);

test(
  'a new password: what the same browser sent with the old cookie still goes through for a few seconds',
  { timeout: 60_000 },
  async () => {
    const account = 'gil@example.test';
    await addAccount(t.p.directory, account);
    const c = client();
    assert.equal((await c.login(account)).status, 200);
    const elsewhere = client();
    assert.equal((await elsewhere.login(account)).status, 200);
    // another tab of the same browser, which has not seen the new cookie yet (or this
    // tab's request sent before the change answered); and a copy of the cookie elsewhere
    const otherTab = copyOf(c, c.ip);
    const stolen = copyOf(c);
    await newPassword(c);

    const read = await otherTab.get('/api/folders');
    assert.equal(read.status, 200, `the other tab is not sent to the login: ${read.text}`);
    const write = await otherTab.post('/api/account/forwarding', { targets: [], keepCopy: true });
    assert.equal(write.status, 200, write.text);
    assert.equal((await c.get('/api/folders')).status, 200, 'the renewed session goes on');
    // the account's other sessions end, and the old cookie from any other address
    assert.deepEqual([(await elsewhere.get('/api/folders')).json.error], ['not_logged_in']);
    assert.deepEqual([(await stolen.get('/api/folders')).json.error], ['not_logged_in']);
    // the grace is not pushed back by the old cookie's requests: it ends
    await waitFor(async () => (await otherTab.get('/api/folders')).status === 401, {
      what: 'the old cookie refused once its grace is over',
      timeoutMs: 30_000,
      intervalMs: 500,
    });
    assert.equal((await c.get('/api/folders')).status, 200);
  },
);

test(
  'a new password: a sign-out everywhere ends the old cookie’s grace too',
  { timeout: 60_000 },
  async () => {
    const account = 'pia@example.test';
    await addAccount(t.p.directory, account);
    const c = client();
    assert.equal((await c.login(account)).status, 200);
    const otherTab = copyOf(c, c.ip);
    await newPassword(c);
    assert.equal((await otherTab.get('/api/folders')).status, 200);
    assert.equal((await c.post('/api/account/sign-out-everywhere')).status, 200);
    assert.equal((await otherTab.get('/api/folders')).status, 401);
    assert.equal((await c.get('/api/folders')).status, 401);
  },
);

test(
  'a new password, then a logout: the old cookie and its event stream end, its grace or not',
  { timeout: 90_000 },
  async () => {
    const account = 'lia@example.test';
    await addAccount(t.p.directory, account);
    const c = await longGraceClient();
    assert.equal((await c.login(account)).status, 200);
    const otherTab = copyOf(c, c.ip);
    await newPassword(c);
    assert.equal((await otherTab.get('/api/folders')).status, 200, 'in its grace');
    // the other tab's event stream, opened under the old cookie
    const stream = await openEvents(otherTab, t.ca);
    try {
      assert.equal(stream.status, 200);
      const out = await c.post('/api/logout');
      assert.equal(out.status, 200, out.text);
      // within the grace: the browser logged out, no id of its login is any good
      const read = await otherTab.get('/api/folders');
      assert.deepEqual([read.status, read.json.error], [401, 'not_logged_in']);
      c.cookies.set('__Host-mailyard_session', otherTab.cookies.get('__Host-mailyard_session')!);
      assert.equal((await c.get('/api/folders')).status, 401);
      // and the stream says so at its next check of the session (every 15 s)
      await waitFor(() => stream.ended && stream.events.some((e) => e.event === 'logout'), {
        what: 'the old cookie’s event stream ended with a logout',
        timeoutMs: 45_000,
      });
    } finally {
      stream.close();
    }
  },
);

test(
  'a new password, then a logout sent with the old cookie: the new one ends too',
  { timeout: 60_000 },
  async () => {
    const account = 'kit@example.test';
    await addAccount(t.p.directory, account);
    const c = await longGraceClient();
    assert.equal((await c.login(account)).status, 200);
    // another tab logs out with the cookie it had before the change answered: the answer
    // that carries the new cookie may come after the one that clears it
    const otherTab = copyOf(c, c.ip);
    await newPassword(c);
    const out = await otherTab.post('/api/logout');
    assert.equal(out.status, 200, out.text);
    const read = await c.get('/api/folders');
    assert.deepEqual([read.status, read.json.error], [401, 'not_logged_in']);
  },
);

test(
  'a new password, then a login again: neither id of the login before is any good',
  { timeout: 60_000 },
  async () => {
    const account = 'ine@example.test';
    await addAccount(t.p.directory, account);
    const c = await longGraceClient();
    assert.equal((await c.login(account)).status, 200);
    const otherTab = copyOf(c, c.ip);
    await newPassword(c);
    const renewed = copyOf(c, c.ip);
    // the browser logs in again (as another account): the login it held ends, both its ids
    assert.equal((await c.login('alice@example.test')).status, 200);
    assert.equal((await c.get('/api/account')).json.account, 'alice@example.test');
    assert.equal((await otherTab.get('/api/folders')).status, 401, 'the old id, in its grace');
    assert.equal((await renewed.get('/api/folders')).status, 401, 'the renewed id');
  },
);

test(
  'a new password, then a login elsewhere sent with the old cookie: the new one goes on',
  { timeout: 60_000 },
  async () => {
    const account = 'ora@example.test';
    await addAccount(t.p.directory, account);
    const c = await longGraceClient();
    assert.equal((await c.login(account)).status, 200);
    // a copy of the cookie elsewhere, perhaps the reason for the new password
    const stolen = copyOf(c);
    const oldCookie = stolen.cookies.get('__Host-mailyard_session')!;
    await newPassword(c);
    // its holder logs in to an account of their own, sending the old cookie with it
    const s = await stolen.get('/api/session');
    stolen.csrf = s.json.loginToken;
    stolen.cookies.set('__Host-mailyard_session', oldCookie);
    const login = await stolen.post('/api/login', { username: 'alice@example.test', password: PASSWORD });
    assert.equal(login.status, 200, login.text);
    // the user stays logged in; the old cookie is still no good elsewhere
    const read = await c.get('/api/folders');
    assert.equal(read.status, 200, `the renewed session goes on: ${read.text}`);
    const copy = copyOf(stolen);
    copy.cookies.set('__Host-mailyard_session', oldCookie);
    assert.equal((await copy.get('/api/folders')).status, 401);
  },
);

test(
  'a second new password sent with the old cookie in its grace does not lengthen that grace',
  { timeout: 120_000 },
  async () => {
    const account = 'zed@example.test';
    await addAccount(t.p.directory, account);
    const grace = 20_000;
    const wm = await t.another({ session_renewal_grace: `${grace / 1000}s` });
    const c = new WebClient(wm.port, t.ca);
    assert.equal((await c.login(account)).status, 200);
    const otherTab = copyOf(c, c.ip);
    const oldCookie = otherTab.cookies.get('__Host-mailyard_session')!;
    await newPassword(c);
    // the old cookie's grace ends by then, whatever comes after
    const graceOver = Date.now() + grace;
    // a while later, within that grace, the other tab sets the password again with the old cookie
    await new Promise((r) => setTimeout(r, grace / 2));
    const again = await otherTab.post('/api/account/password', {
      current: 'a new long passphrase',
      password: 'a third long passphrase',
    });
    assert.equal(again.status, 200, again.text);
    otherTab.csrf = again.json.csrf;
    // the old cookie gets no second grace from it: it ends when its first one does
    const old = copyOf(c, c.ip);
    old.cookies.set('__Host-mailyard_session', oldCookie);
    await new Promise((r) => setTimeout(r, Math.max(0, graceOver - Date.now()) + 500));
    const late = await old.get('/api/folders');
    assert.deepEqual(
      [late.status, late.json.error],
      [401, 'not_logged_in'],
      'the old cookie, its grace over',
    );
    assert.equal((await otherTab.get('/api/folders')).status, 200, 'the newest id goes on');
  },
);

test(
  'a new password while the session is signed out everywhere: changed, and the answer says so',
  { timeout: 60_000 },
  async () => {
    const account = 'ned@example.test';
    await addAccount(t.p.directory, account);
    const elsewhere = client();
    assert.equal((await elsewhere.login(account)).status, 200);
    // a webmail whose password change the sign-out everywhere of another session overtakes
    let signedOut: WebResponse | null = null;
    const directory = Object.create(t.p.directory) as Directory;
    directory.setPassword = async (a, password) => {
      signedOut = await elsewhere.post('/api/account/sign-out-everywhere');
      return t.p.directory.setPassword(a, password);
    };
    const webmail = await t.another({}, { directory });
    const c = new WebClient(webmail.port, t.ca);
    assert.equal((await c.login(account)).status, 200);
    const res = await c.post('/api/account/password', {
      current: PASSWORD,
      password: 'a new long passphrase',
    });
    assert.equal((signedOut as WebResponse | null)?.status, 200);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { changed: true, signedOut: true });
    assert.equal(c.cookies.has('__Host-mailyard_session'), false, 'the cookie is cleared');
    // the password did change: the new one logs in, the old one does not
    assert.equal(await imapLogin(account, PASSWORD), false);
    assert.equal(await imapLogin(account, 'a new long passphrase'), true);
    assert.equal((await client().login(account, PASSWORD)).status, 401);
    assert.equal((await c.login(account, 'a new long passphrase')).status, 200);
    assert.equal((await c.get('/api/account')).status, 200);
  },
);

test('sign out everywhere ends every webmail session of the account only', { timeout: 60_000 }, async () => {
  const account = 'gus@example.test';
  await addAccount(t.p.directory, account);
  const [a, b, other] = [client(), client(), client()];
  await a.login(account);
  await b.login(account);
  await other.login('alice@example.test');
  const res = await a.post('/api/account/sign-out-everywhere');
  assert.deepEqual([res.status, res.json.ended], [200, 2]);
  assert.equal((await a.get('/api/account')).status, 401);
  assert.equal((await b.get('/api/account')).status, 401);
  assert.equal((await other.get('/api/account')).status, 200);
});

test(
  'a login whose password was being checked when the account signed out everywhere is ended too',
  { timeout: 60_000 },
  async () => {
    const account = 'max@example.test';
    await addAccount(t.p.directory, account);
    const owner = client();
    assert.equal((await owner.login(account)).status, 200);
    // a webmail whose password check the owner's sign-out everywhere overtakes: it ran
    // while the password was right, and the session is made after it
    const redis = t.p.redis.redis;
    const checks = createAuthenticator({
      directory: t.p.directory,
      guard: new LoginGuard(redis),
      appPasswords: new AppPasswords(redis),
    });
    let signedOut: WebResponse | null = null;
    const overtaken: Authenticator = {
      async authenticate(req) {
        const res = await checks.authenticate(req);
        if (!signedOut) signedOut = await owner.post('/api/account/sign-out-everywhere');
        return res;
      },
    };
    const webmail = await t.another({}, { authenticator: overtaken });
    const late = new WebClient(webmail.port, t.ca);
    assert.equal((await late.login(account)).status, 200);
    assert.equal((signedOut as WebResponse | null)?.status, 200);
    const res = await late.get('/api/account');
    assert.deepEqual([res.status, res.json.error], [401, 'not_logged_in']);
    assert.match(res.json.message, /^This session was ended \(signed out everywhere/);
    assert.equal((await owner.get('/api/account')).status, 401);
    // a login checked after it stays
    assert.equal((await late.login(account)).status, 200);
    assert.equal((await late.get('/api/account')).status, 200);
  },
);

test(
  "a login checked as its account was deleted and made again does not open the new account's mail",
  { timeout: 60_000 },
  async () => {
    const account = 'ola@example.test';
    await addAccount(t.p.directory, account);
    // the old password was right when it was checked; the account is then deleted and an
    // account of the same address made, with a password of its own, before the session is
    const redis = t.p.redis.redis;
    const checks = createAuthenticator({
      directory: t.p.directory,
      guard: new LoginGuard(redis),
      appPasswords: new AppPasswords(redis),
    });
    let remade = false;
    const overtaken: Authenticator = {
      async authenticate(req) {
        const res = await checks.authenticate(req);
        if (!remade) {
          remade = true;
          await t.p.directory.delUser(account);
          await t.p.directory.addUser(account, `another ${PASSWORD}`);
        }
        return res;
      },
    };
    const webmail = await t.another({}, { authenticator: overtaken });
    const late = new WebClient(webmail.port, t.ca);
    assert.equal((await late.login(account)).status, 200);
    assert.ok(remade);
    const res = await late.get('/api/account');
    assert.deepEqual([res.status, res.json.error], [401, 'not_logged_in']);
    // the new account's own password opens it
    assert.equal((await late.login(account, `another ${PASSWORD}`)).status, 200);
    assert.equal((await late.get('/api/account')).json.account, account);
  },
);

test(
  'sign out everywhere ends the IMAP, POP3 and submission sessions of the account',
  { timeout: 90_000 },
  async (t2) => {
    const account = 'hal@example.test';
    await addAccount(t.p.directory, account);
    const c = client();
    await c.login(account);
    const { secret } = (await c.post('/api/account/app-passwords', { name: 'phone', password: PASSWORD }))
      .json;
    const ports = mailPorts(t);
    const held = await holdSessions([
      { label: 'imap', proto: 'imap', port: ports.imap, user: account, pass: PASSWORD },
      { label: 'pop3', proto: 'pop3', port: ports.pop3, user: account, pass: secret },
      { label: 'smtp', proto: 'smtp', port: ports.smtp, user: account, pass: PASSWORD },
      { label: 'other', proto: 'imap', port: ports.imap, user: 'alice@example.test', pass: PASSWORD },
    ]);
    t2.after(() => held.close());
    const res = await c.post('/api/account/sign-out-everywhere');
    assert.equal(res.status, 200);
    assert.equal(await held.next('imap'), '* BYE [EXPIRED] Signed out everywhere by the account owner');
    assert.equal(await held.next('pop3'), '-ERR [AUTH] Signed out everywhere by the account owner');
    assert.equal(
      await held.next('smtp'),
      '421 4.7.0 Error: signed out everywhere by the account owner, closing connection',
    );
    assert.equal(await held.alive('other'), true);
    assert.equal((await c.get('/api/account')).status, 401);
    // the credentials still work: a new login after the sign-out is not ended
    assert.equal(await imapLogin(account, PASSWORD), true);
  },
);

test(
  'revoking an app password ends its sessions; another app password’s stays',
  { timeout: 90_000 },
  async (t2) => {
    const account = 'ivy@example.test';
    await addAccount(t.p.directory, account);
    const c = client();
    await c.login(account);
    const phone = (await c.post('/api/account/app-passwords', { name: 'phone', password: PASSWORD })).json
      .secret as string;
    const laptop = (await c.post('/api/account/app-passwords', { name: 'laptop', password: PASSWORD })).json
      .secret as string;
    const port = t.retrieval.ports.imaps;
    const held = await holdSessions([
      { label: 'phone', proto: 'imap', port, user: account, pass: phone },
      { label: 'laptop', proto: 'imap', port, user: account, pass: laptop },
    ]);
    t2.after(() => held.close());
    assert.equal((await c.post('/api/account/app-passwords/revoke', { name: 'phone' })).status, 200);
    assert.equal(await held.next('phone'), '* BYE [EXPIRED] The app password of this session was revoked');
    assert.equal(await held.alive('laptop'), true);
  },
);

test(
  'a new password ends the other sessions that logged in with the old one',
  { timeout: 90_000 },
  async (t2) => {
    const account = 'jon@example.test';
    await addAccount(t.p.directory, account);
    const [c, elsewhere] = [client(), client()];
    await c.login(account);
    await elsewhere.login(account);
    const { secret } = (await c.post('/api/account/app-passwords', { name: 'phone', password: PASSWORD }))
      .json;
    const port = t.retrieval.ports.imaps;
    const held = await holdSessions([
      { label: 'password', proto: 'imap', port, user: account, pass: PASSWORD },
      { label: 'app', proto: 'imap', port, user: account, pass: secret },
    ]);
    t2.after(() => held.close());
    const res = await c.post('/api/account/password', {
      current: PASSWORD,
      password: 'a new long passphrase',
    });
    assert.equal(res.status, 200);
    assert.equal(await held.next('password'), '* BYE [EXPIRED] The password of this account was changed');
    assert.equal(await held.alive('app'), true);
    assert.equal((await c.get('/api/account')).status, 200);
    assert.equal((await elsewhere.get('/api/account')).status, 401);
  },
);

test(
  'the out-of-office reply: stored as set, bad input refused with a reason',
  { timeout: 60_000 },
  async () => {
    const account = 'kim@example.test';
    await addAccount(t.p.directory, account);
    const c = client();
    await c.login(account);
    assert.deepEqual((await c.get('/api/account/vacation')).json, {
      enabled: false,
      subject: '',
      body: '',
      start: null,
      end: null,
      days: 7,
    });
    const v = {
      enabled: true,
      subject: 'Away',
      body: 'Back on Monday.',
      start: '2026-12-20',
      end: '2027-01-03',
    };
    const ok = await c.post('/api/account/vacation', v);
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual((await c.get('/api/account/vacation')).json, { ...v, days: 7 });
    const bad: [Record<string, unknown>, string][] = [
      [{ ...v, body: '' }, 'body: the text of the reply is empty'],
      [{ ...v, body: 'x'.repeat(8001) }, 'body: at most 8000 characters'],
      [{ ...v, subject: 'two\r\nlines' }, 'subject: one line only'],
      [{ ...v, end: '2026-12-01' }, 'end: the last day is before the first'],
      [{ ...v, start: 'tomorrow' }, 'start: expected a date as YYYY-MM-DD'],
      // a day the calendar does not have (read as 2 March, stored as typed)
      [{ ...v, end: '2027-02-30' }, 'end: not a real date'],
      [{ ...v, start: '2026-13-01' }, 'start: not a real date'],
      [{ ...v, days: 0 }, 'days: at least 1'],
      [{ ...v, enabled: 'yes' }, 'enabled: expected true or false'],
    ];
    for (const [body, message] of bad) {
      const res = await c.post('/api/account/vacation', body);
      assert.deepEqual([res.status, res.json.message], [400, message], JSON.stringify(body));
    }
    assert.deepEqual((await c.get('/api/account/vacation')).json, { ...v, days: 7 });
  },
);

test('forwarding: stored as set; bad, too many or own addresses refused', { timeout: 60_000 }, async () => {
  const account = 'lou@example.test';
  await addAccount(t.p.directory, account);
  await t.p.directory.addAlias('lou.alias@example.test', [account]);
  const c = client();
  await c.login(account);
  assert.deepEqual((await c.get('/api/account/forwarding')).json, { targets: [], keepCopy: true });
  const ok = await c.post('/api/account/forwarding', { targets: ['Lou@Elsewhere.test'], keepCopy: false });
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual((await c.get('/api/account/forwarding')).json, {
    targets: ['Lou@elsewhere.test'],
    keepCopy: false,
  });
  const bad: [Record<string, unknown>, string][] = [
    [{ targets: ['not an address'] }, 'targets.0: "not an address" is not a valid address'],
    [{ targets: ['a%b@example.org'] }, 'targets.0: "a%b@example.org" is not a valid address'],
    [{ targets: Array.from({ length: 11 }, (_, i) => `u${i}@far.test`) }, 'targets: at most 10 addresses'],
    [{ targets: ['x@far.test', 'x@far.test'] }, 'targets: an address is listed twice'],
    [{ targets: [account] }, `targets: ${account} is this account's own address`],
    [
      { targets: ['lou.alias@example.test'] },
      "targets: lou.alias@example.test is this account's own address",
    ],
    // the same mailbox spelt otherwise: every message would come back and be filed twice
    [{ targets: ['LOU@example.test'] }, "targets: LOU@example.test is this account's own address"],
    [{ targets: ['lou+fwd@example.test'] }, "targets: lou+fwd@example.test is this account's own address"],
    // in one of our domains, but no one's: every forward would bounce
    [{ targets: ['x@far.test', 'nobody@example.test'] }, 'targets: nobody@example.test does not exist'],
    [{ targets: 'x@far.test' }, 'targets: expected a list of addresses'],
  ];
  for (const [body, message] of bad) {
    const res = await c.post('/api/account/forwarding', body);
    assert.deepEqual([res.status, res.json.message], [400, message], JSON.stringify(body));
  }
  const off = await c.post('/api/account/forwarding', { targets: [] });
  assert.deepEqual(off.json, { targets: [], keepCopy: true });
});
