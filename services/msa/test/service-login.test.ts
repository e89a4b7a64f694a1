// The webmail submits as the user it acts for: SASL PLAIN with an authorisation identity,
// accepted only for the configured service name, secret and networks.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import nodemailer from 'nodemailer';
import { RawSmtp, waitFor } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
import { PASSWORD, startMsaTestbed, type MsaTestbed } from './msa-harness.js';

const ALICE = 'alice@example.test';
const BOB = 'bob@example.test';
const SECRET = 'a-random-service-secret-of-some-length';
const plain = (...parts: string[]) => Buffer.from(parts.join('\0')).toString('base64');

let t: MsaTestbed;
before(async () => {
  t = await startMsaTestbed({
    msa: { service_login_password: SECRET, service_login_networks: '127.0.0.1/32' },
  });
  await addAccount(t.p.directory, ALICE);
  await addAccount(t.p.directory, BOB);
});
after(() => t.close());

/** nodemailer speaks PLAIN without an authzid; the webmail sends its own PLAIN response. */
const transportActingFor = (user: string, secret = SECRET) =>
  nodemailer.createTransport({
    host: '127.0.0.1',
    port: t.msa.ports.submissions,
    secure: true,
    tls: { rejectUnauthorized: false },
    auth: { type: 'custom', method: 'PLAIN', user: 'webmail', pass: secret },
    customAuth: {
      PLAIN: async (ctx) => {
        const r = await ctx.sendCommand(`AUTH PLAIN ${plain(user, 'webmail', secret)}`);
        if (r.status !== 235) throw new Error(r.text);
      },
    },
  });

async function tlsSession(from: string): Promise<RawSmtp> {
  const c = await RawSmtp.connect(t.msa.ports.submission, '127.0.0.1', { localAddress: from });
  assert.equal((await c.read()).code, 220);
  await c.cmd('EHLO client.example.net');
  assert.equal((await c.cmd('STARTTLS')).code, 220);
  await c.startTls();
  assert.equal((await c.cmd('EHLO client.example.net')).code, 250);
  return c;
}

test(
  'the service login sends as the user it acts for, and only as that user',
  { timeout: 30_000 },
  async () => {
    const tr = transportActingFor(ALICE);
    try {
      await tr.sendMail({ from: ALICE, to: BOB, subject: 'from the webmail', text: 'hello bob' });
      const [file] = await waitFor(() => t.p.inbox(BOB).length === 1 && t.p.inbox(BOB), {
        what: 'delivery to bob',
      });
      assert.match(readFileSync(file!, 'utf8'), /Subject: from the webmail/);
      // acting for alice is no licence to send as bob
      await assert.rejects(
        tr.sendMail({ from: BOB, to: ALICE, subject: 'forged', text: 'x' }),
        (err: Error) => /553/.test(err.message),
      );
    } finally {
      tr.close();
    }
  },
);

test('a user cannot act as someone else with their own password', { timeout: 30_000 }, async () => {
  const c = await tlsSession('127.0.0.1');
  assert.match((await c.cmd(`AUTH PLAIN ${plain(BOB, ALICE, PASSWORD)}`)).text, /^535 5\.7\.8 /);
  c.close();
});

test('the service login is refused with a wrong secret and from elsewhere', { timeout: 30_000 }, async () => {
  const wrong = transportActingFor(ALICE, 'not the secret, though long enough');
  await assert.rejects(wrong.sendMail({ from: ALICE, to: BOB, subject: 'x', text: 'x' }), /535/);
  wrong.close();
  const elsewhere = await tlsSession('127.0.0.2');
  assert.match((await elsewhere.cmd(`AUTH PLAIN ${plain(ALICE, 'webmail', SECRET)}`)).text, /^535 5\.7\.8 /);
  elsewhere.close();
  const ok = await tlsSession('127.0.0.1');
  assert.match((await ok.cmd(`AUTH PLAIN ${plain(ALICE, 'webmail', SECRET)}`)).text, /^235 /);
  ok.close();
});
