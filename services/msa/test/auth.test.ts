import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import nodemailer from 'nodemailer';
import { RawSmtp } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
import { PASSWORD, python, startMsaTestbed, tlsSession as startTls, type MsaTestbed } from './msa-harness.js';

let t: MsaTestbed;
const submission = () => t.msa.ports.submission;
const submissions = () => t.msa.ports.submissions;

before(async () => {
  t = await startMsaTestbed();
  await addAccount(t.p.directory, 'alice@example.test');
  await addAccount(t.p.directory, 'locked@example.test');
  await addAccount(t.p.directory, 'apps@example.test');
});
after(() => t.close());

const plain = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString('base64');

/** A session on 587 after STARTTLS and a second EHLO; `from` picks the client address. */
const tlsSession = (from = '127.0.0.1') => startTls(submission(), from);

describe('AUTH only after TLS', () => {
  test('587 before STARTTLS: AUTH not advertised, the AUTH command refused', async () => {
    const c = await RawSmtp.connect(submission());
    await c.read();
    const ehlo = await c.cmd('EHLO client.example.net');
    assert.ok(
      ehlo.lines.some((l) => l.slice(4) === 'STARTTLS'),
      ehlo.text,
    );
    assert.ok(!ehlo.lines.some((l) => /AUTH/.test(l)), `AUTH offered before TLS: ${ehlo.text}`);
    const r = await c.cmd(`AUTH PLAIN ${plain('alice@example.test', PASSWORD)}`);
    assert.match(r.text, /^530 5\.7\.0 /);
    // and no mail either
    assert.match((await c.cmd('MAIL FROM:<alice@example.test>')).text, /^530 5\.7\.0 /);
    c.close();
  });

  test('smtplib sees no AUTH before STARTTLS and logs in after it', async () => {
    const res = await python<{ before: string; after: boolean; features: string }>(
      `
s = smtplib.SMTP('127.0.0.1', port, timeout=10)
s.ehlo('client.example.net')
try:
    s.login(args['user'], args['password'])
    before = 'logged in'
except smtplib.SMTPNotSupportedError:
    before = 'not supported'
s.starttls(context=ctx)
s.ehlo('client.example.net')
features = s.esmtp_features.get('auth', '')
s.login(args['user'], args['password'])
s.quit()
out({'before': before, 'after': True, 'features': features})
`,
      submission(),
      { user: 'alice@example.test', password: PASSWORD },
    );
    assert.equal(res.before, 'not supported');
    assert.equal(res.features.trim(), 'PLAIN LOGIN');
  });

  test('after STARTTLS, AUTH PLAIN (nodemailer) sends', async () => {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: submission(),
      secure: false,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user: 'alice@example.test', pass: PASSWORD, method: 'PLAIN' },
    });
    const info = await transport.sendMail({
      from: 'alice@example.test',
      to: 'alice@example.test',
      subject: 'starttls plain',
      text: 'hi',
    });
    assert.match(info.response, /^250 2\.0\.0 Ok: queued as /);
    transport.close();
  });

  test('465 implicit TLS with AUTH LOGIN (smtplib) sends', async () => {
    const res = await python<{ code: number; msg: string }>(
      `
s = smtplib.SMTP_SSL('127.0.0.1', port, timeout=10, context=ctx)
s.ehlo('client.example.net')
assert 'LOGIN' in s.esmtp_features.get('auth', '')
s.user, s.password = args['user'], args['password']
code, msg = s.auth('LOGIN', s.auth_login, initial_response_ok=False)
s.mail(args['user'])
s.rcpt(args['user'])
code, msg = s.data(b'From: alice@example.test\\r\\nSubject: 465\\r\\n\\r\\nhello\\r\\n')
s.quit()
out({'code': code, 'msg': msg.decode()})
`,
      submissions(),
      { user: 'alice@example.test', password: PASSWORD },
    );
    assert.equal(res.code, 250);
    assert.match(res.msg, /^2\.0\.0 Ok: queued as /);
  });

  test('465 with nodemailer (secure: true) and AUTH LOGIN', async () => {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: submissions(),
      secure: true,
      tls: { rejectUnauthorized: false },
      auth: { user: 'alice@example.test', pass: PASSWORD, method: 'LOGIN' },
    });
    const info = await transport.sendMail({
      from: 'alice@example.test',
      to: 'alice@example.test',
      subject: 'implicit tls',
      text: 'hi',
    });
    assert.match(info.response, /^250 /);
    transport.close();
  });
});

describe('credentials', () => {
  test('an app password logs in; once revoked it does not', async () => {
    const secret = await t.apps.create('apps@example.test', 'laptop');
    const c = await tlsSession();
    assert.match((await c.cmd(`AUTH PLAIN ${plain('apps@example.test', secret)}`)).text, /^235 /);
    c.close();
    await t.apps.revoke('apps@example.test', 'laptop');
    const d = await tlsSession();
    assert.match((await d.cmd(`AUTH PLAIN ${plain('apps@example.test', secret)}`)).text, /^535 5\.7\.8 /);
    d.close();
  });

  test('a wrong password and an unknown account get the same answer', async () => {
    const c = await tlsSession('127.0.0.3');
    const wrong = await c.cmd(`AUTH PLAIN ${plain('alice@example.test', 'not the password')}`);
    const unknown = await c.cmd(`AUTH PLAIN ${plain('nobody@example.test', 'not the password')}`);
    assert.equal(wrong.text, '535 5.7.8 Authentication credentials invalid');
    assert.equal(unknown.text, wrong.text);
    c.close();
  });

  test('an authorization identity other than the login is refused', async () => {
    const c = await tlsSession('127.0.0.3');
    const token = Buffer.from(`locked@example.test\0alice@example.test\0${PASSWORD}`).toString('base64');
    assert.match((await c.cmd(`AUTH PLAIN ${token}`)).text, /^535 5\.7\.8 /);
    c.close();
  });

  test('wrong passwords lock the address that sent them, not the account', { timeout: 30_000 }, async () => {
    const c = await tlsSession('127.0.0.4');
    for (let i = 0; i < 5; i++) {
      assert.match(
        (await c.cmd(`AUTH PLAIN ${plain('locked@example.test', `wrong ${i}`)}`)).text,
        /^535 5\.7\.8 /,
      );
    }
    // the guessing address is refused, even with the right password
    const r = await c.cmd(`AUTH PLAIN ${plain('locked@example.test', PASSWORD)}`);
    assert.match(r.text, /^454 4\.7\.0 Too many failed login attempts, try again in \d+ seconds$/);
    c.close();
    // the owner, from another address, logs in
    const d = await tlsSession('127.0.0.5');
    assert.match((await d.cmd(`AUTH PLAIN ${plain('locked@example.test', PASSWORD)}`)).text, /^235 /);
    d.close();
    // the same answer whether or not the account exists
    const e = await tlsSession('127.0.0.7');
    for (let i = 0; i < 5; i++) await e.cmd(`AUTH PLAIN ${plain('ghost@example.test', `wrong ${i}`)}`);
    assert.match((await e.cmd(`AUTH PLAIN ${plain('ghost@example.test', 'x')}`)).text, /^454 4\.7\.0 /);
    e.close();
  });

  test('MAIL without AUTH: 530 5.7.0', async () => {
    const c = await tlsSession('127.0.0.6');
    assert.match((await c.cmd('MAIL FROM:<alice@example.test>')).text, /^530 5\.7\.0 /);
    assert.match((await c.cmd('RCPT TO:<alice@example.test>')).text, /^(503|530) /);
    c.close();
  });
});

describe('pipelining (RFC 2920 §3.1)', () => {
  test(
    'before AUTH, a command sent before the reply to NOOP: 554 5.5.0, disconnected, no login',
    { timeout: 20_000 },
    async () => {
      const c = await tlsSession();
      c.write(
        `NOOP\r\nAUTH PLAIN ${plain('alice@example.test', PASSWORD)}\r\nMAIL FROM:<alice@example.test>\r\n`,
      );
      assert.equal((await c.read()).text, '554 5.5.0 Error: SMTP protocol synchronization');
      await c.waitClosed();
      const body = await (await fetch(`http://127.0.0.1:${t.rt.httpPort}/metrics`)).text();
      assert.match(body, /mailyard_msa_rejections_total\{reason="improper_pipelining"\} [1-9]/);
    },
  );

  test('after AUTH, pipelining is free: NOOP, then a whole transaction', { timeout: 20_000 }, async () => {
    const c = await tlsSession();
    assert.equal((await c.cmd(`AUTH PLAIN ${plain('alice@example.test', PASSWORD)}`)).code, 235);
    c.write('NOOP\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n');
    for (const code of [250, 250, 250, 354]) assert.equal((await c.read()).code, code);
    c.write('Subject: pipelined\r\n\r\nhello\r\n.\r\nQUIT\r\n');
    assert.match((await c.read()).text, /^250 2\.0\.0 Ok: queued as /);
    assert.equal((await c.read()).code, 221);
  });
});

describe('metrics', () => {
  test('/metrics counts logins and refusals by reason', async () => {
    const body = await (await fetch(`http://127.0.0.1:${t.rt.httpPort}/metrics`)).text();
    for (const re of [
      /mailyard_msa_auth_failures_total\{reason="auth_invalid"\} [1-9]/,
      /mailyard_msa_auth_failures_total\{reason="auth_locked"\} [1-9]/,
      /mailyard_msa_auth_success_total\{via="password"\} [1-9]/,
      /mailyard_msa_auth_success_total\{via="app-password"\} [1-9]/,
      /mailyard_msa_rejections_total\{reason="auth_required"\} [1-9]/,
      /mailyard_msa_sessions_total\{listener="submissions"\} [1-9]/,
    ]) {
      assert.ok(re.test(body), `missing ${String(re)}`);
    }
  });
});
