// Who gets in on 587/465: a failing backend is a temporary failure; wrong passwords lock
// the address that sent them, not the account.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import type { RawSmtp } from '@mailyard/testkit';
import { startPrivateRedis, type PrivateRedis } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
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
    t = await startMsaTestbed({ guardRedis: failing.client() });
    await addAccount(t.p.directory, 'alice@example.test');
    // the lockout cannot be read or counted; the accounts (on the shared Redis) can
    await failing.refuse(['pttl', 'get', 'mget', 'incr', 'set']);
  });
  after(async () => {
    await t?.close();
    await failing?.stop();
  });

  test('454 4.7.0 for the right password and for a wrong one', { timeout: 20_000 }, async () => {
    const c = await tlsSession(t.msa.ports.submission);
    const right = await c.cmd(`AUTH PLAIN ${plain('alice@example.test', PASSWORD)}`);
    assert.equal(right.text, '454 4.7.0 Temporary authentication failure, try again later');
    const wrong = await c.cmd(`AUTH PLAIN ${plain('alice@example.test', 'not the password')}`);
    assert.equal(wrong.text, right.text);
  });
});
