import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import nodemailer from 'nodemailer';
import { after, afterEach, before, describe, test } from 'node:test';
import { PolicyRules, addEntry, removeEntry, resetList } from '@mailyard/policy-rules';
import { RawSmtp, waitFor } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
import { PASSWORD, python, startMsaTestbed, tlsSession, type MsaTestbed } from './msa-harness.js';

// smtpd_client_restrictions on submission. The lists are shared with port 25, where they
// run at connect; on 587/465 they run once the user has logged in, with the SASL user in
// the request (Postfix's smtpd_delay_reject), so that permit_sasl_authenticated ends them.
// A user on a dynamic address that a policy block list names (Spamhaus PBL) still sends.

const T = { timeout: 60_000 };
/** A dynamic address, listed as such (127.0.0.11: Spamhaus PBL's code); no reverse DNS. */
const LISTED = '127.0.0.40';
/** An address no list names; no reverse DNS either. */
const CLEAN = '127.0.0.41';

let t: MsaTestbed;
let rules: PolicyRules;
const open: RawSmtp[] = [];

before(async () => {
  t = await startMsaTestbed({
    platform: {
      // mynetworks would let every 127/8 client through before the lists are read
      policy: { mynetworks: '127.0.0.1/32' },
      zone: {
        '40.0.0.127.dnsbl.test': { A: ['127.0.0.11'] },
        // the list's server failing for this one
        '43.0.0.127.dnsbl.test': { SERVFAIL: true },
      },
    },
  });
  for (const a of ['alice', 'bob']) await addAccount(t.p.directory, `${a}@example.test`);
  rules = new PolicyRules(t.p.redis.redis, t.p.redis.prefix);
});
after(() => t?.close());
afterEach(async () => {
  for (const c of open.splice(0)) c.close();
  await resetList(rules, 'smtpd_client_restrictions');
  await reloaded();
});

/** Waits until the policy service has loaded the rules as they are now. */
async function reloaded(): Promise<void> {
  const v = Number(await t.p.redis.redis.get('policy:version'));
  await waitFor(() => t.p.policy!.rulesVersion >= v, { what: 'policy rules reload' });
}

/** `mailyard policy add smtpd_client_restrictions reject_rbl_client dnsbl.test`, as the README says. */
async function addDnsbl(): Promise<void> {
  await addEntry(rules, 'smtpd_client_restrictions', ['reject_rbl_client', 'dnsbl.test']);
  await reloaded();
}

/** Sends with nodemailer from `from`, logged in on 587; the server's final response. */
async function send(from: string, subject: string): Promise<string> {
  const transport = nodemailer.createTransport({
    host: '127.0.0.1',
    port: t.msa.ports.submission,
    localAddress: from,
    requireTLS: true,
    tls: { rejectUnauthorized: false },
    auth: { user: 'alice@example.test', pass: PASSWORD },
  });
  try {
    const info = await transport.sendMail({
      from: 'alice@example.test',
      to: 'bob@example.test',
      subject,
      text: 'sent from home',
    });
    return info.response;
  } finally {
    transport.close();
  }
}

const delivered = (subject: string) =>
  waitFor(
    () =>
      t.p.inbox('bob@example.test').find((f) => readFileSync(f, 'utf8').includes(`Subject: ${subject}`)) ??
      null,
    { what: `"${subject}" in bob's INBOX` },
  );

const plain = (user: string) => Buffer.from(`\0${user}\0${PASSWORD}`).toString('base64');

/** A session on 587 from `from`, after STARTTLS, logged in as alice. */
async function loggedIn(from: string): Promise<RawSmtp> {
  const c = await tlsSession(t.msa.ports.submission, from);
  open.push(c);
  assert.match((await c.cmd(`AUTH PLAIN ${plain('alice@example.test')}`)).text, /^235 /);
  return c;
}

describe('the client list on submission', () => {
  test('a user on a listed dynamic address logs in and sends, on 587 and 465', T, async () => {
    await addDnsbl();
    assert.match(await send(LISTED, 'from a listed address'), /^250 2\.0\.0 Ok: queued as /);
    await delivered('from a listed address');
    // a second client, on 465 with implicit TLS
    const res = await python<{ code: number }>(
      `
s = smtplib.SMTP_SSL('127.0.0.1', port, timeout=10, context=ctx, source_address=(args['from'], 0))
s.login(args['user'], args['password'])
s.mail(args['user'])
s.rcpt('bob@example.test')
code, msg = s.data(b'From: alice@example.test\\r\\nSubject: over 465 from a listed address\\r\\n\\r\\nhi\\r\\n')
s.quit()
out({'code': code})
`,
      t.msa.ports.submissions,
      { from: LISTED, user: 'alice@example.test', password: PASSWORD },
    );
    assert.equal(res.code, 250);
    await delivered('over 465 from a listed address');
  });

  test('an unauthenticated client, listed or not, can send nothing', T, async () => {
    await addDnsbl();
    for (const from of [LISTED, CLEAN]) {
      const res = await python<{ mail: string; rcpt: string }>(
        `
s = smtplib.SMTP('127.0.0.1', port, timeout=10, source_address=(args['from'], 0))
s.starttls(context=ctx)
s.ehlo('laptop.example.net')
code, msg = s.mail('alice@example.test')
mail = '%d %s' % (code, msg.decode())
code, msg = s.rcpt('bob@example.test')
rcpt = '%d %s' % (code, msg.decode())
s.quit()
out({'mail': mail, 'rcpt': rcpt})
`,
        t.msa.ports.submission,
        { from },
      );
      assert.match(res.mail, /^530 5\.7\.0 Authentication required/, from);
      assert.match(res.rcpt, /^(530 5\.7\.0|503 5\.5\.1) /, from);
    }
  });

  test('port 25 is unchanged: the listed address is refused at connect', T, async () => {
    await addDnsbl();
    const c = await RawSmtp.connect(t.p.inbound.port, '127.0.0.1', { localAddress: LISTED });
    open.push(c);
    assert.match(
      (await c.read()).text,
      /^554 5\.7\.1 Service unavailable; Client host \[127\.0\.0\.40\] blocked using dnsbl\.test \(127\.0\.0\.11\)/,
    );
  });

  test('an entry before permit_sasl_authenticated applies to users too: at MAIL, after AUTH', T, async () => {
    await rules.set('smtpd_client_restrictions', [
      'reject_rbl_client dnsbl.test',
      'permit_sasl_authenticated',
    ]);
    await reloaded();
    const c = await loggedIn(LISTED);
    const refused =
      /^554 5\.7\.1 Service unavailable; Client host \[127\.0\.0\.40\] blocked using dnsbl\.test/;
    assert.match((await c.cmd('MAIL FROM:<alice@example.test>')).text, refused);
    // decided once per session, as at connect: the next transaction gets the same answer
    assert.match((await c.cmd('MAIL FROM:<alice@example.test>')).text, refused);
    const d = await loggedIn(CLEAN);
    assert.equal((await d.cmd('MAIL FROM:<alice@example.test>')).code, 250);
    // a lookup that failed is asked again at the next MAIL
    const e = await loggedIn('127.0.0.43');
    assert.match(
      (await e.cmd('MAIL FROM:<alice@example.test>')).text,
      /^450 4\.7\.1 Service temporarily unavailable: dnsbl\.test lookup failed/,
    );
    t.p.dns.set('43.0.0.127.dnsbl.test', {});
    assert.equal((await e.cmd('MAIL FROM:<alice@example.test>')).code, 250);
  });

  test('a network the admin blocks in client_access is blocked for users too', T, async () => {
    await rules.accessSet('client_access', 'client', CLEAN, 'REJECT compromised network');
    try {
      await reloaded();
      const c = await loggedIn(CLEAN);
      assert.match(
        (await c.cmd('MAIL FROM:<alice@example.test>')).text,
        /^554 5\.7\.1 .*compromised network/,
      );
    } finally {
      await rules.accessDel('client_access', 'client', CLEAN);
      await reloaded();
    }
  });

  test('the connection rate of clients without FCrDNS does not count logged-in users', T, async () => {
    // the default list with a rate of one connection a minute
    await removeEntry(rules, 'smtpd_client_restrictions', ['check_rate', 'client_connections', '60/1m']);
    await addEntry(rules, 'smtpd_client_restrictions', ['check_rate', 'client_connections', '1/1m']);
    await reloaded();
    for (const subject of ['first of the minute', 'second of the minute'])
      assert.match(await send(CLEAN, subject), /^250 /, subject);
    // port 25 counts them as before
    const first = await RawSmtp.connect(t.p.inbound.port, '127.0.0.1', { localAddress: '127.0.0.42' });
    open.push(first);
    assert.equal((await first.read()).code, 220);
    const second = await RawSmtp.connect(t.p.inbound.port, '127.0.0.1', { localAddress: '127.0.0.42' });
    open.push(second);
    assert.match(
      (await second.read()).text,
      /^421 4\.7\.1 Error: too many connections from \[127\.0\.0\.42\]/,
    );
  });
});
