import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import nodemailer from 'nodemailer';
import { after, before, describe, test } from 'node:test';
import { PolicyRules, addEntry, removeEntry, resetList } from '@mailyard/policy-rules';
import { EICAR, RawSmtp, startClamd, waitFor, type Scanner } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
import type { Msa } from '../src/index.js';
import { PASSWORD, queueIdOf, startMsaTestbed, type MsaTestbed } from './msa-harness.js';

// Submission through the policy service: two MSA instances, the real policy service
// (rules and counters in Redis) and a real clamd with a one-signature database.

let t: MsaTestbed;
let second: Msa;
let clamd: Scanner;
let rules: PolicyRules;

before(async () => {
  clamd = await startClamd();
  t = await startMsaTestbed({ platform: { policy: { clamd_url: clamd.url } } });
  second = await t.another({});
  for (const a of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank'])
    await addAccount(t.p.directory, `${a}@example.test`);
  rules = new PolicyRules(t.p.redis.redis, t.p.redis.prefix);
});
after(async () => {
  await t?.close();
  await clamd?.stop();
});

const plain = (user: string) => Buffer.from(`\0${user}\0${PASSWORD}`).toString('base64');

/** An authenticated session on 587 (STARTTLS, AUTH PLAIN). */
async function session(user: string, port: number): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  assert.equal((await c.read()).code, 220);
  await c.cmd('EHLO laptop.example.net');
  assert.equal((await c.cmd('STARTTLS')).code, 220);
  await c.startTls();
  await c.cmd('EHLO laptop.example.net');
  assert.match((await c.cmd(`AUTH PLAIN ${plain(user)}`)).text, /^235 /);
  return c;
}

const message = (from: string, to: string, subject: string, body: string) =>
  [`From: <${from}>`, `To: <${to}>`, `Subject: ${subject}`, '', ...body.split('\n'), ''].join('\r\n');

/** Waits until every policy instance has loaded the rules as they are now. */
async function reloaded(): Promise<void> {
  const v = Number(await t.p.redis.redis.get('policy:version'));
  await waitFor(() => t.p.policy!.rulesVersion >= v, { what: 'policy rules reload' });
}

describe('msa asks the policy service', () => {
  test('a clean submission passes every stage and carries the reasons header', async () => {
    const c = await session('alice@example.test', t.msa.ports.submission);
    assert.equal((await c.cmd('MAIL FROM:<alice@example.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<bob@example.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    c.write(message('alice@example.test', 'bob@example.test', 'hello', 'Just saying hello.') + '.\r\n');
    const r = await c.read();
    assert.equal(r.code, 250, r.text);
    queueIdOf(r.text);
    await c.cmd('QUIT');
    const files = await waitFor(() => {
      const f = t.p.inbox('bob@example.test');
      return f.length ? f : null;
    });
    const delivered = files.map((f) => readFileSync(f, 'utf8')).join('\n');
    assert.match(delivered, /^X-Mailyard-Policy: inbox; check_virus=clean/m);
    // the submitter's own IP is no evidence about the sender domain: no SPF/DMARC verdict
    assert.doesNotMatch(delivered, /Authentication-Results:/);
  });

  test('Authentication-Results under our authserv-id are removed from a submission', async () => {
    // a user writing our verdict into a message for a colleague, whose client trusts what
    // the header under our name says (RFC 8601 §5: removed where mail enters us)
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: t.msa.ports.submission,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user: 'erin@example.test', pass: PASSWORD },
    });
    try {
      const info = await transport.sendMail({
        from: 'erin@example.test',
        to: 'carol@example.test',
        subject: 'your bank',
        text: 'Please confirm your account.',
        headers: [
          {
            key: 'Authentication-Results',
            value: 'mx.mailyard.test; dkim=pass header.d=bank.example; dmarc=pass',
          },
          { key: 'Authentication-Results', value: 'MX.Mailyard.Test 1; spf=pass smtp.mailfrom=bank.example' },
          // as a reader of the field reads it, a comment or quotes change nothing
          { key: 'Authentication-Results', value: '(verified) mx.mailyard.test; dmarc=pass' },
          // as written (nodemailer would make the quotes an encoded-word)
          {
            key: 'Authentication-Results',
            value: { prepared: true, value: '"mx.mailyard.test"; dkim=pass' },
          },
          { key: 'Authentication-Results', value: 'other.example; dkim=pass header.d=bank.example' },
        ],
      });
      assert.match(info.response, /^250 2\.0\.0 Ok: queued as /);
    } finally {
      transport.close();
    }
    const file = await waitFor(
      () => t.p.inbox('carol@example.test').find((f) => /your bank/.test(readFileSync(f, 'utf8'))) ?? null,
      { what: "the message in carol's INBOX" },
    );
    const text = readFileSync(file, 'utf8');
    const head = text.slice(0, text.indexOf('\r\n\r\n'));
    assert.doesNotMatch(head, /^Authentication-Results:.*mx\.mailyard\.test/im);
    // another server's results are not ours to remove
    assert.match(head, /^Authentication-Results: other\.example; dkim=pass/m);
  });

  test('per-user recipient rate limit, added with the CLI functions while running, shared by two instances', async () => {
    // `mailyard policy remove/add smtpd_recipient_restrictions ...`: the default per-user
    // limit replaced by a small one
    await removeEntry(rules, 'smtpd_recipient_restrictions', ['check_rate', 'user_recipients', '1000/1h']);
    await addEntry(rules, 'smtpd_recipient_restrictions', ['check_rate', 'user_recipients', '3/1h'], 1);
    await reloaded();
    try {
      const a = await session('frank@example.test', t.msa.ports.submission);
      assert.equal((await a.cmd('MAIL FROM:<frank@example.test>')).code, 250);
      assert.equal((await a.cmd('RCPT TO:<bob@example.test>')).code, 250);
      assert.equal((await a.cmd('RCPT TO:<carol@example.test>')).code, 250);
      await a.cmd('QUIT');

      // the other instance sees the same counter
      const b = await session('frank@example.test', second.ports.submission);
      assert.equal((await b.cmd('MAIL FROM:<frank@example.test>')).code, 250);
      assert.equal((await b.cmd('RCPT TO:<dave@example.test>')).code, 250);
      const over = await b.cmd('RCPT TO:<erin@example.test>');
      assert.match(
        over.text,
        /^450 4\.7\.1 Error: frank@example\.test sent to too many recipients, try again later/,
      );
      await b.cmd('QUIT');

      // another user has a counter of their own
      const c = await session('bob@example.test', second.ports.submission);
      assert.equal((await c.cmd('MAIL FROM:<bob@example.test>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<erin@example.test>')).code, 250);
      await c.cmd('QUIT');
    } finally {
      await resetList(rules, 'smtpd_recipient_restrictions');
      await reloaded();
    }
  });

  test('messages per hour per sender domain, listed before permit_sasl_authenticated', async () => {
    await addEntry(rules, 'smtpd_sender_restrictions', ['check_rate', 'sender_domain_messages', '2/1h'], 1);
    await reloaded();
    try {
      // the sender lists that need the policy service run with the first RCPT, as Postfix's
      // smtpd_delay_reject: a message is counted, and refused, there
      const a = await session('alice@example.test', t.msa.ports.submission);
      for (let i = 0; i < 2; i++) {
        assert.equal((await a.cmd('MAIL FROM:<alice@example.test>')).code, 250);
        assert.equal((await a.cmd('RCPT TO:<dave@example.test>')).code, 250);
        assert.equal((await a.cmd('RSET')).code, 250);
      }
      await a.cmd('QUIT');
      // another user of the same domain, on the other instance
      const b = await session('bob@example.test', second.ports.submission);
      assert.equal((await b.cmd('MAIL FROM:<bob@example.test>')).code, 250);
      const over = await b.cmd('RCPT TO:<dave@example.test>');
      assert.match(over.text, /^450 4\.7\.1 Error: too many messages from example\.test, try again later/);
      await b.cmd('QUIT');
    } finally {
      await resetList(rules, 'smtpd_sender_restrictions');
      await reloaded();
    }
  });

  test('a recipient refused in a transaction does not count its message again in the sender limits', async () => {
    await addEntry(rules, 'smtpd_sender_restrictions', ['check_rate', 'sender_domain_messages', '2/1h'], 1);
    // a recipient refused before the authenticated user is let through: the RCPT's own lists
    await addEntry(rules, 'smtpd_recipient_restrictions', ['check_recipient_access', 'recipient_access'], 1);
    await rules.accessSet('recipient_access', 'address', 'erin@example.test', 'REJECT no mail for erin');
    await reloaded();
    // a domain of its own: the counter starts at zero
    await addAccount(t.p.directory, 'grace@example.org');
    try {
      const a = await session('grace@example.org', t.msa.ports.submission);
      assert.equal((await a.cmd('MAIL FROM:<grace@example.org>')).code, 250);
      // the sender lists run with the first RCPT and count the message, the recipient's refuse it
      assert.match((await a.cmd('RCPT TO:<erin@example.test>')).text, /^554 5\.7\.1 .*no mail for erin/);
      assert.equal((await a.cmd('RCPT TO:<dave@example.test>')).code, 250);
      assert.equal((await a.cmd('RCPT TO:<erin@example.test>')).code, 554);
      assert.equal((await a.cmd('RSET')).code, 250);
      // the second message of the hour is let through, the third is not
      assert.equal((await a.cmd('MAIL FROM:<grace@example.org>')).code, 250);
      assert.equal((await a.cmd('RCPT TO:<dave@example.test>')).code, 250);
      assert.equal((await a.cmd('RSET')).code, 250);
      assert.equal((await a.cmd('MAIL FROM:<grace@example.org>')).code, 250);
      const over = await a.cmd('RCPT TO:<dave@example.test>');
      assert.match(over.text, /^450 4\.7\.1 Error: too many messages from example\.org, try again later/);
      await a.cmd('QUIT');
    } finally {
      await resetList(rules, 'smtpd_sender_restrictions');
      await resetList(rules, 'smtpd_recipient_restrictions');
      await rules.accessDel('recipient_access', 'address', 'erin@example.test');
      await reloaded();
    }
  });

  test('EICAR is refused at end of DATA with 554 5.7.1 naming the signature, nothing queued', async () => {
    const c = await session('carol@example.test', t.msa.ports.submission);
    assert.equal((await c.cmd('MAIL FROM:<carol@example.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<dave@example.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    c.write(message('carol@example.test', 'dave@example.test', 'virus', `Here it is:\n${EICAR}`) + '.\r\n');
    const r = await c.read();
    assert.match(r.text, /^554 5\.7\.1 Message rejected: virus found: Mailyard\.Test\.EICAR/);
    // the session goes on: a clean message right after is accepted
    assert.equal((await c.cmd('MAIL FROM:<carol@example.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<dave@example.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    c.write(message('carol@example.test', 'dave@example.test', 'clean', 'Nothing here.') + '.\r\n');
    assert.equal((await c.read()).code, 250);
    await c.cmd('QUIT');
    const files = await waitFor(() => {
      const f = t.p.inbox('dave@example.test');
      return f.length ? f : null;
    });
    assert.equal(files.length, 1);
    assert.match(readFileSync(files[0]!, 'utf8'), /Subject: clean/);
  });

  test('policy service not answering: 451 4.3.5 at MAIL, the client list included', async () => {
    const fast = await t.another({ policy_timeout: '500ms', policy_data_timeout: '500ms' });
    const c = await session('alice@example.test', fast.ports.submission);
    await t.p.policy!.stop();
    const mail = await c.cmd('MAIL FROM:<alice@example.test>');
    assert.match(mail.text, /^451 4\.3\.5 Server configuration problem/);
    await c.cmd('QUIT');
    // the client list waits for the login (port 25 answers 421 at connect): the user
    // logs in and is told to try again at MAIL
    const d = await session('alice@example.test', fast.ports.submission);
    assert.match((await d.cmd('MAIL FROM:<alice@example.test>')).text, /^451 4\.3\.5 /);
    await d.cmd('QUIT');
  });
});
