// Who gets in on 587/465: a failing backend is a temporary failure; wrong passwords lock
// the address that sent them, not the account.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { RawSmtp, startPrivateRedis, type PrivateRedis } from '@mailyard/testkit';
import { addAccount, runMailyard } from '../../../test/harness.js';
import { PASSWORD, startMsaTestbed, tlsSession as startTls, type MsaTestbed } from './msa-harness.js';

const plain = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString('base64');
const open: RawSmtp[] = [];
afterEach(() => {
  for (const c of open.splice(0)) c.close();
});

async function tlsSession(port: number, from = '127.0.0.1'): Promise<RawSmtp> {
  const c = await startTls(port, from);
  open.push(c);
  return c;
}

describe('a failing backend during AUTH', () => {
  let t: MsaTestbed;
  let failing: PrivateRedis;
  before(async () => {
    failing = await startPrivateRedis();
    t = await startMsaTestbed({ guardRedis: failing.client(), msa: { login_timeout: '3s' } });
    await addAccount(t.p.directory, 'alice@example.test');
    // the lockout cannot be read or counted; the accounts (on the shared Redis) can
    await failing.refuse(['pttl', 'get', 'mget', 'incr', 'set']);
  });
  after(async () => {
    await t?.close();
    await failing?.close();
  });

  test('454 4.7.0 for the right password and for a wrong one', { timeout: 20_000 }, async () => {
    const c = await tlsSession(t.msa.ports.submission);
    const right = await c.cmd(`AUTH PLAIN ${plain('alice@example.test', PASSWORD)}`);
    assert.equal(right.text, '454 4.7.0 Temporary authentication failure, try again later');
    const wrong = await c.cmd(`AUTH PLAIN ${plain('alice@example.test', 'not the password')}`);
    assert.equal(wrong.text, right.text);
  });

  test(
    'a session that does not authenticate within login_timeout gets 421 4.7.0, however busy it keeps',
    { timeout: 30_000 },
    async () => {
      const c = await tlsSession(t.msa.ports.submission);
      const started = Date.now();
      let last = await c.cmd('NOOP');
      while (last.code === 250 && Date.now() - started < 15_000) {
        await new Promise((r) => setTimeout(r, 300));
        last = await c.cmd('NOOP');
      }
      assert.equal(last.text, '421 4.7.0 Error: not authenticated in time, closing connection');
      await c.waitClosed();
    },
  );
});

describe('a revoked app password; per-client limits', () => {
  let t: MsaTestbed;
  before(async () => {
    t = await startMsaTestbed({
      msa: {
        smtpd_client_connection_count_limit: 2,
        smtpd_client_connection_rate_limit: 5,
        smtpd_client_event_limit_exceptions: '127.0.0.1/32',
      },
    });
    await addAccount(t.p.directory, 'bob@example.test');
  });
  after(() => t?.close());

  test(
    '`mailyard app-password revoke` ends a submission session that logged in with it',
    { timeout: 60_000 },
    async () => {
      const secret = await t.apps.create('bob@example.test', 'laptop');
      const c = await tlsSession(t.msa.ports.submission);
      assert.match((await c.cmd(`AUTH PLAIN ${plain('bob@example.test', secret)}`)).text, /^235 /);
      assert.match((await c.cmd('MAIL FROM:<bob@example.test>')).text, /^250 /);
      const other = await tlsSession(t.msa.ports.submission);
      assert.match((await other.cmd(`AUTH PLAIN ${plain('bob@example.test', PASSWORD)}`)).text, /^235 /);
      await runMailyard(t.p, ['app-password', 'revoke', 'bob@example.test', 'laptop']);
      const bye = await c.read(10_000);
      assert.equal(
        bye.text,
        '421 4.7.0 Error: the app password of this session was revoked, closing connection',
      );
      await c.waitClosed();
      // the session that logged in with the account password goes on
      assert.match((await other.cmd('NOOP')).text, /^250 /);
    },
  );

  test(
    '465: connections past smtpd_client_connection_count_limit get 421 4.7.0 over TLS, and close',
    { timeout: 30_000 },
    async () => {
      const greet = async () => {
        const c = await RawSmtp.connectTls(t.msa.ports.submissions, '127.0.0.1', {
          localAddress: '127.0.0.21',
        });
        open.push(c);
        return (await c.read()).text;
      };
      assert.match(await greet(), /^220 /);
      assert.match(await greet(), /^220 /);
      assert.equal(await greet(), '421 4.7.0 Error: too many connections from 127.0.0.21');
      await open.at(-1)!.waitClosed();
      // from another address
      const c = await RawSmtp.connectTls(t.msa.ports.submissions, '127.0.0.1', {
        localAddress: '127.0.0.23',
      });
      open.push(c);
      assert.match((await c.read()).text, /^220 /);
    },
  );

  test(
    '587: connections past smtpd_client_connection_rate_limit in a minute get 421 4.7.0',
    { timeout: 30_000 },
    async () => {
      const greet = async () => {
        const c = await RawSmtp.connect(t.msa.ports.submission, '127.0.0.1', { localAddress: '127.0.0.22' });
        const text = (await c.read()).text;
        c.close();
        return text;
      };
      // the counts are per minute of the clock: a minute may turn during the test
      const replies: string[] = [];
      while (replies.length < 11 && !replies.at(-1)?.startsWith('421')) replies.push(await greet());
      assert.equal(replies.at(-1), '421 4.7.0 Error: too many connections from 127.0.0.22');
      assert.ok(replies.length > 5, `refused after ${replies.length - 1}`);
    },
  );
});
