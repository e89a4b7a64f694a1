// Two-factor login against the real platform: enrolment (QR code, recovery codes), the
// second step of the webmail login with wrong, replayed and recovery codes, the shared
// lockout, and the account password refused by IMAP, POP3 and submission (real clients)
// while app passwords keep working. TOTP codes come from otplib on a clock the test moves.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import nodemailer from 'nodemailer';
import { generate } from 'otplib';
import { LoginGuard, TwoFactor } from '@mailyard/auth';
import { addAccount } from '../../../test/harness.js';
import { webmailFile } from './file-setup.js';
import { PASSWORD, type WebmailTestbed } from './webmail-harness.js';
import { holdSessions, imapLogin as imapLoginAs, mailPorts } from './mail-clients.js';
import { WebClient } from './web-client.js';
import type { Webmail } from '../src/index.js';

let t: WebmailTestbed;
let wm: Webmail;
/** The webmail's clock for TOTP (ms); codes are made for it, so no test waits for a time step. */
let clock = Date.now();
webmailFile({}, async (f) => {
  t = f.t;
  const redis = t.p.redis.redis;
  wm = await t.another({}, { twoFactor: new TwoFactor(redis, new LoginGuard(redis), { now: () => clock }) });
});
const client = () => new WebClient(wm.port, t.ca);
const code = (secret: string, at = clock) => generate({ secret, epoch: Math.floor(at / 1000) });
/** Moves the clock to the next time step, so the next code is a new one. */
const nextStep = () => (clock += 30_000);

async function enrol(account: string): Promise<{ c: WebClient; secret: string; recovery: string[] }> {
  await addAccount(t.p.directory, account);
  const c = client();
  assert.equal((await c.login(account)).status, 200);
  const begin = await c.post('/api/account/two-factor/begin', { password: PASSWORD });
  assert.equal(begin.status, 200, begin.text);
  assert.match(begin.json.qr, /^data:image\/png;base64,[A-Za-z0-9+/]+=*$/);
  assert.match(begin.json.uri, /^otpauth:\/\/totp\//);
  const secret: string = begin.json.secret;
  const wrong = await c.post('/api/account/two-factor/confirm', { code: '000000' });
  assert.deepEqual([wrong.status, wrong.json.error], [401, 'invalid_code']);
  const ok = await c.post('/api/account/two-factor/confirm', { code: await code(secret) });
  assert.equal(ok.status, 200, ok.text);
  c.csrf = ok.json.csrf;
  return { c, secret, recovery: ok.json.recoveryCodes };
}

const imapLogin = (user: string, pass: string) => imapLoginAs(t, user, pass);

async function submissionLogin(user: string, pass: string): Promise<boolean> {
  const tr = nodemailer.createTransport({
    host: '127.0.0.1',
    port: t.msa.ports.submissions,
    secure: true,
    tls: { rejectUnauthorized: false },
    auth: { user, pass },
  });
  try {
    await tr.verify();
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === 'EAUTH') return false;
    throw err;
  } finally {
    tr.close();
  }
}

/** Python's poplib over implicit TLS: "ok" or "refused" (run asynchronously: the server is in this process). */
async function pop3Login(user: string, pass: string): Promise<string> {
  const script = [
    'import poplib, ssl, sys',
    'ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE',
    `p = poplib.POP3_SSL('127.0.0.1', ${t.retrieval.ports.pop3s}, context=ctx, timeout=20)`,
    'try:',
    '    p.user(sys.argv[1]); p.pass_(sys.argv[2]); print("ok")',
    'except poplib.error_proto as e:',
    '    print("refused", e)',
    'p.quit()',
  ].join('\n');
  const r = await promisify(execFile)('python3', ['-c', script, user, pass], { timeout: 30_000 });
  return r.stdout.trim().split(' ')[0]!;
}

describe('two-factor login', () => {
  test(
    'enrol, then the login asks for a code; replayed and wrong codes are refused',
    { timeout: 60_000 },
    async () => {
      const { secret, recovery } = await enrol('tf1@example.test');
      assert.equal(recovery.length, 10);
      assert.equal(new Set(recovery).size, 10);
      for (const r of recovery) assert.match(r, /^[a-z2-9]{5}-[a-z2-9]{5}$/);

      const c = client();
      const first = await c.login('tf1@example.test');
      assert.deepEqual(
        [first.status, first.json.authenticated, first.json.next],
        [200, false, 'second-factor'],
      );
      c.csrf = first.json.csrf;
      assert.equal((await c.get('/api/folders')).json.error, 'second_factor_required');
      // the code of enrolment was used: the same step's code is a replay
      const replay = await c.post('/api/login/second-factor', { code: await code(secret) });
      assert.deepEqual([replay.status, replay.json.error], [401, 'invalid_code']);
      nextStep();
      const now = await code(secret);
      const ok = await c.post('/api/login/second-factor', { code: now });
      assert.equal(ok.status, 200, ok.text);
      c.csrf = ok.json.csrf;
      assert.equal((await c.get('/api/folders')).status, 200);
      // another login with that same code: refused
      const other = client();
      other.csrf = (await other.login('tf1@example.test')).json.csrf;
      const again = await other.post('/api/login/second-factor', { code: now });
      assert.deepEqual([again.status, again.json.error], [401, 'invalid_code']);
      // without the CSRF token, nothing
      const noCsrf = await other.req('POST', '/api/login/second-factor', {
        json: { code: now },
        csrf: false,
      });
      assert.deepEqual([noCsrf.status, noCsrf.json.error], [403, 'csrf']);
      // the account page says it is on
      const info = await c.get('/api/account');
      assert.deepEqual(info.json.twoFactor, { available: true, enabled: true, recoveryCodesLeft: 10 });
    },
  );

  test(
    "turning two-factor on ends the account's other webmail sessions; this one goes on, renewed",
    { timeout: 60_000 },
    async () => {
      const account = 'tf-web@example.test';
      await addAccount(t.p.directory, account);
      // a session of the password alone elsewhere (perhaps whoever made the owner enrol)
      const other = client();
      assert.equal((await other.login(account)).status, 200);
      assert.equal((await other.get('/api/folders')).status, 200);
      const c = client();
      assert.equal((await c.login(account)).status, 200);
      const oldCookie = [...c.cookies.values()].join();
      const begin = await c.post('/api/account/two-factor/begin', { password: PASSWORD });
      nextStep();
      const ok = await c.post('/api/account/two-factor/confirm', { code: await code(begin.json.secret) });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.json.recoveryCodes.length, 10);
      assert.notEqual([...c.cookies.values()].join(), oldCookie, 'a new session id');
      c.csrf = ok.json.csrf;
      assert.equal((await c.get('/api/folders')).status, 200, 'this session goes on');
      assert.equal((await c.get('/api/account')).json.twoFactor.enabled, true);
      assert.equal((await other.get('/api/folders')).json.error, 'not_logged_in');
    },
  );

  test('a recovery code works once', { timeout: 60_000 }, async () => {
    const { recovery } = await enrol('tf2@example.test');
    const c = client();
    c.csrf = (await c.login('tf2@example.test')).json.csrf;
    const ok = await c.post('/api/login/second-factor', { code: recovery[3]!.toUpperCase() });
    assert.equal(ok.status, 200, ok.text);
    const d = client();
    d.csrf = (await d.login('tf2@example.test')).json.csrf;
    const twice = await d.post('/api/login/second-factor', { code: recovery[3] });
    assert.deepEqual([twice.status, twice.json.error], [401, 'invalid_code']);
    c.csrf = ok.json.csrf;
    assert.equal((await c.get('/api/account')).json.twoFactor.recoveryCodesLeft, 9);
  });

  test('wrong codes count in the shared lockout', { timeout: 60_000 }, async () => {
    const { secret } = await enrol('tf3@example.test');
    const c = client();
    c.csrf = (await c.login('tf3@example.test')).json.csrf;
    for (let i = 0; i < 5; i++) {
      const bad = await c.post('/api/login/second-factor', { code: String(100000 + i) });
      assert.deepEqual([bad.status, bad.json.error], [401, 'invalid_code']);
    }
    nextStep();
    const locked = await c.post('/api/login/second-factor', { code: await code(secret) });
    assert.deepEqual([locked.status, locked.json.error], [429, 'locked']);
    // the address is locked for that account's password too, on every protocol
    const again = new WebClient(wm.port, t.ca, c.ip);
    assert.deepEqual([(await again.login('tf3@example.test')).status], [429]);
  });

  test(
    'ten wrong codes in a row from any addresses end the login; the password still logs in, a recovery code too',
    { timeout: 60_000 },
    async () => {
      const account = 'tf6@example.test';
      const { secret, recovery } = await enrol(account);
      /** A login from an address of its own, up to its second step. */
      const partial = async () => {
        const c = client();
        const res = await c.login(account);
        assert.deepEqual([res.status, res.json.next], [200, 'second-factor']);
        c.csrf = res.json.csrf;
        return c;
      };
      // two wrong codes from each of five addresses: no address is locked
      const answers: string[] = [];
      for (let i = 0; i < 5; i++) {
        const c = await partial();
        for (let j = 0; j < 2; j++)
          answers.push(
            (await c.post('/api/login/second-factor', { code: String(200000 + i * 2 + j) })).json.error,
          );
        if (i === 4) {
          // the login that reached the cap was ended: the password is asked again
          const after = await c.post('/api/login/second-factor', { code: await code(secret) });
          assert.deepEqual([after.status, after.json.error], [401, 'not_logged_in']);
        }
      }
      assert.deepEqual(answers, [...Array(9).fill('invalid_code'), 'too_many_codes']);
      // the password logs in, but even the right code is refused for now
      nextStep();
      const owner = await partial();
      const right = await owner.post('/api/login/second-factor', { code: await code(secret) });
      assert.deepEqual([right.status, right.json.error], [401, 'too_many_codes']);
      // a recovery code is not guessable: it lets the owner in, and the count starts again
      const again = await partial();
      const ok = await again.post('/api/login/second-factor', { code: recovery[0] });
      assert.equal(ok.status, 200, ok.text);
      const next = await partial();
      const wrong = await next.post('/api/login/second-factor', { code: '123456' });
      assert.deepEqual([wrong.status, wrong.json.error], [401, 'invalid_code']);
      nextStep();
      const fine = await next.post('/api/login/second-factor', { code: await code(secret) });
      assert.equal(fine.status, 200, fine.text);
    },
  );

  test(
    'with two-factor on, IMAP, POP3 and submission refuse the password and take app passwords',
    { timeout: 90_000 },
    async () => {
      const account = 'tf4@example.test';
      await addAccount(t.p.directory, account);
      // before: the password works everywhere
      assert.equal(await imapLogin(account, PASSWORD), true);
      assert.equal(await submissionLogin(account, PASSWORD), true);
      assert.equal(await pop3Login(account, PASSWORD), 'ok');
      const { c } = await enrolExisting(account);
      const app = await c.post('/api/account/app-passwords', { name: 'phone', password: PASSWORD });
      assert.equal(app.status, 200, app.text);
      const secret: string = app.json.secret;
      assert.equal(await imapLogin(account, PASSWORD), false);
      assert.equal(await submissionLogin(account, PASSWORD), false);
      assert.equal(await pop3Login(account, PASSWORD), 'refused');
      assert.equal(await imapLogin(account, secret), true);
      assert.equal(await submissionLogin(account, secret), true);
      assert.equal(await pop3Login(account, secret), 'ok');
      // turned off (with the password): the password works again
      const wrong = await c.post('/api/account/two-factor/disable', { password: 'not the password' });
      assert.deepEqual([wrong.status, wrong.json.error], [403, 'wrong_password']);
      assert.equal((await c.post('/api/account/two-factor/disable', { password: PASSWORD })).status, 200);
      assert.equal(await imapLogin(account, PASSWORD), true);
    },
  );

  test(
    'turning two-factor on ends the IMAP, POP3 and submission sessions of the password; app passwords’ stay',
    { timeout: 90_000 },
    async (t2) => {
      const account = 'tf5@example.test';
      await addAccount(t.p.directory, account);
      const c = client();
      assert.equal((await c.login(account)).status, 200);
      const app = await c.post('/api/account/app-passwords', { name: 'phone', password: PASSWORD });
      assert.equal(app.status, 200, app.text);
      const ports = mailPorts(t);
      const held = await holdSessions([
        { label: 'imap', proto: 'imap', port: ports.imap, user: account, pass: PASSWORD },
        { label: 'pop3', proto: 'pop3', port: ports.pop3, user: account, pass: PASSWORD },
        { label: 'smtp', proto: 'smtp', port: ports.smtp, user: account, pass: PASSWORD },
        { label: 'phone', proto: 'imap', port: ports.imap, user: account, pass: app.json.secret as string },
      ]);
      t2.after(() => held.close());
      await enrolExisting(account);
      // the password no longer logs in there: a session opened with it before must not go on
      const why = 'Two-factor login was turned on: log in with an app password';
      assert.equal(await held.next('imap'), `* BYE [EXPIRED] ${why}`);
      assert.equal(await held.next('pop3'), `-ERR [AUTH] ${why}`);
      assert.equal(
        await held.next('smtp'),
        '421 4.7.0 Error: two-factor login was turned on: log in with an app password, closing connection',
      );
      assert.equal(await held.alive('phone'), true);
      // a webmail session of the password alone, other than the one that turned it on, too
      assert.equal((await c.get('/api/account')).json.error, 'not_logged_in');
    },
  );
});

/** enrol() for an account that exists already. */
async function enrolExisting(account: string) {
  const c = client();
  assert.equal((await c.login(account)).status, 200);
  const begin = await c.post('/api/account/two-factor/begin', { password: PASSWORD });
  nextStep();
  const ok = await c.post('/api/account/two-factor/confirm', { code: await code(begin.json.secret) });
  assert.equal(ok.status, 200, ok.text);
  c.csrf = ok.json.csrf;
  return { c };
}
