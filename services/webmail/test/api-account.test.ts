// The account page's API: recent logins (from IMAP and the webmail), app passwords with
// their last use, changing the password with the CLI's rules, signing out everywhere.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { addAccount } from '../../../test/harness.js';
import { PASSWORD, startWebmailTestbed, type WebmailTestbed } from './webmail-harness.js';
import { imapLogin as imapLoginAs } from './mail-clients.js';
import { WebClient } from './web-client.js';

let t: WebmailTestbed;
before(async () => {
  t = await startWebmailTestbed();
});
after(() => t?.close());
const client = () => new WebClient(t.webmail.port, t.ca);

const imapLogin = (user: string, pass: string) => imapLoginAs(t, user, pass);

test('recent logins and the last use of an app password', { timeout: 60_000 }, async () => {
  const account = 'eve@example.test';
  await addAccount(t.p.directory, account);
  const c = client();
  assert.equal((await c.login(account)).status, 200);
  const { secret } = (await c.post('/api/account/app-passwords', { name: 'laptop' })).json;
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
  const dup = await c.post('/api/account/app-passwords', { name: 'laptop' });
  assert.deepEqual([dup.status, dup.json.error], [409, 'conflict']);
  const bad = await c.post('/api/account/app-passwords', { name: 'a/b' });
  assert.equal(bad.status, 400);
  const gone = await c.post('/api/account/app-passwords/revoke', { name: 'nope' });
  assert.deepEqual([gone.status, gone.json.error], [404, 'no_such_app_password']);
});

test(
  'changing the password: the current one first, the CLI’s strength rules',
  { timeout: 60_000 },
  async () => {
    const account = 'fay@example.test';
    await addAccount(t.p.directory, account);
    const c = client();
    assert.equal((await c.login(account)).status, 200);
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
    const ok = await c.post('/api/account/password', {
      current: PASSWORD,
      password: 'a new long passphrase',
    });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(await imapLogin(account, PASSWORD), false);
    assert.equal(await imapLogin(account, 'a new long passphrase'), true);
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
