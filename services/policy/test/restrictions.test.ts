import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { loadConfig } from '@mailyard/config';
import { DEFAULT_RESTRICTIONS, PolicyRules } from '@mailyard/policy-rules';
import { createRuntime } from '@mailyard/runtime';
import { buildMtaInbound, defaultDeps, mtaInboundSchema } from '@mailyard/service-mta-inbound';
import { RawSmtp, waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';

// Every check through a real SMTP session: mta-inbound (port 0) asks the policy
// service over the test's RabbitMQ vhost; rules live under the test's Redis prefix.

let p: Platform;
let rules: PolicyRules;
const clock = { now: Date.parse('2026-01-01T00:00:00Z') };

before(async () => {
  p = await startPlatform({
    inbound: { mynetworks: '127.0.0.1/32', policy_timeout: '20s' },
    policy: { mynetworks: '127.0.0.1/32', greylist_delay: '300s', greylist_dnsbl: 'dnsbl.test' },
    policyNow: () => clock.now,
    zone: {
      // FCrDNS: PTR and A agree
      '5.0.0.127.in-addr.arpa': { PTR: ['client.example.net'] },
      'client.example.net': { A: ['127.0.0.5'] },
      // PTR whose name points elsewhere
      '6.0.0.127.in-addr.arpa': { PTR: ['liar.example.net'] },
      'liar.example.net': { A: ['192.0.2.99'] },
      '5.1.0.127.in-addr.arpa': { PTR: ['c2.example.net'] },
      'c2.example.net': { A: ['127.0.1.5'] },
      // 127.0.0.7 has no PTR at all
      '10.0.0.127.in-addr.arpa': { SERVFAIL: true },
      // a PTR whose name's own lookup fails
      '11.0.0.127.in-addr.arpa': { PTR: ['broken.example.net'] },
      'broken.example.net': { SERVFAIL: true },
      'sender.test': { MX: [{ priority: 10, exchange: 'mx.sender.test' }] },
      'aonly.test': { A: ['192.0.2.1'] },
      'nullmx.test': { MX: [{ priority: 0, exchange: '' }] },
      'servfail.test': { SERVFAIL: true },
      // one of our own domains whose DNS is broken
      'own.test': { SERVFAIL: true },
      'timeout.test': { TIMEOUT: true },
      // müller.test, as DNS knows it
      'xn--mller-kva.test': { MX: [{ priority: 10, exchange: 'mx.sender.test' }] },
      'spammer.test': { MX: [{ priority: 10, exchange: 'mx.spammer.test' }] },
      '8.0.0.127.dnsbl.test': { A: ['127.0.0.2'] },
      // listed, but with FCrDNS; spf8.test publishes it as its mail server
      '8.0.0.127.in-addr.arpa': { PTR: ['listed.example.net'] },
      'listed.example.net': { A: ['127.0.0.8'] },
      // FCrDNS in a network of its own, which never passed greylisting before
      '5.2.0.127.in-addr.arpa': { PTR: ['fresh.example.net'] },
      'fresh.example.net': { A: ['127.0.2.5'] },
      'spf8.test': {
        MX: [{ priority: 10, exchange: 'listed.example.net' }],
        TXT: ['v=spf1 ip4:127.0.0.8 -all'],
      },
      '9.0.0.127.dnsbl.test': { A: ['127.0.0.4'] },
      // the list refuses the query, as Spamhaus does for queries through a public resolver
      '12.0.0.127.dnsbl.test': { A: ['127.255.255.254'] },
      // FCrDNS, and GREYLIST_DNSBL refuses the query about it
      '13.0.0.127.in-addr.arpa': { PTR: ['refused.example.net'] },
      'refused.example.net': { A: ['127.0.0.13'] },
      '13.0.0.127.dnsbl.test': { A: ['127.255.255.254'] },
      'spammer.test.rhsbl.test': { A: ['127.0.0.2'] },
    },
  });
  await addAccount(p.directory, 'alice@example.test');
  await addAccount(p.directory, 'bob@example.test');
  rules = new PolicyRules(p.redis.redis, p.redis.prefix);
});
after(() => p.close());

/** Replaces the given lists (the others keep whatever they had) and waits for the live reload. */
async function setRules(lists: Record<string, string[]>): Promise<void> {
  for (const [name, entries] of Object.entries(lists)) await rules.set(name, entries);
  const v = Number(await p.redis.redis.get('policy:version'));
  await waitFor(() => p.policy!.rulesVersion >= v, { what: 'policy rules reload' });
}

const NONE = {
  smtpd_client_restrictions: [],
  smtpd_helo_restrictions: [],
  smtpd_sender_restrictions: [],
  smtpd_relay_restrictions: ['permit_mynetworks', 'reject_unauth_destination'],
  smtpd_recipient_restrictions: [],
  smtpd_data_restrictions: [],
};

interface Attempt {
  from?: string;
  ip?: string;
  helo?: string;
  rcpt?: string;
  /** MAIL FROM with SMTPUTF8 (an internationalized address). */
  smtputf8?: boolean;
}

/** Runs a transaction as far as it goes; returns the first refusal, or the DATA reply. */
async function attempt(a: Attempt = {}): Promise<{ stage: string; code: number; text: string }> {
  const c = await RawSmtp.connect(p.inbound.port, '127.0.0.1', { localAddress: a.ip ?? '127.0.0.5' });
  try {
    const steps: [string, string | null][] = [
      ['connect', null],
      ['helo', `EHLO ${a.helo ?? 'client.example.net'}`],
      ['mail', `MAIL FROM:<${a.from ?? 'someone@sender.test'}>${a.smtputf8 ? ' SMTPUTF8' : ''}`],
      ['rcpt', `RCPT TO:<${a.rcpt ?? 'alice@example.test'}>`],
      ['data', 'DATA'],
    ];
    for (const [stage, line] of steps) {
      const r = line === null ? await c.read(15_000) : await c.cmd(line);
      if (r.code >= 400) return { stage, code: r.code, text: r.text };
    }
    c.write('From: someone@sender.test\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nhello\r\n.\r\n');
    const r = await c.read(15_000);
    return { stage: 'end', code: r.code, text: r.text };
  } finally {
    c.close();
  }
}

describe('client restrictions', () => {
  beforeEach(() => setRules(NONE));

  test('reject_unknown_reverse_client_hostname: no PTR refused at connect, PTR accepted', async () => {
    await setRules({ smtpd_client_restrictions: ['reject_unknown_reverse_client_hostname'] });
    const bad = await attempt({ ip: '127.0.0.7' });
    assert.equal(bad.stage, 'connect');
    assert.match(
      bad.text,
      /^554 5\.7\.25 Client host rejected: cannot find your reverse hostname, \[127\.0\.0\.7\]/,
    );
    assert.equal((await attempt({ ip: '127.0.0.6' })).code, 250, 'a PTR without FCrDNS passes this check');
  });

  test('reject_unknown_client_hostname: PTR that does not resolve back is refused (FCrDNS)', async () => {
    await setRules({ smtpd_client_restrictions: ['reject_unknown_client_hostname'] });
    const bad = await attempt({ ip: '127.0.0.6' });
    assert.equal(bad.stage, 'connect');
    assert.match(bad.text, /cannot find your hostname, \[127\.0\.0\.6\]/);
    assert.equal((await attempt({ ip: '127.0.0.5' })).code, 250);
  });

  test('DNS SERVFAIL on the PTR gives a temporary failure, never an accept or a crash', async () => {
    await setRules({ smtpd_client_restrictions: ['reject_unknown_client_hostname'] });
    const r = await attempt({ ip: '127.0.0.10' });
    assert.equal(r.stage, 'connect');
    assert.equal(r.code, 421);
  });

  test(
    'a failed forward lookup of the PTR name defers, never refuses as "no hostname"',
    { timeout: 60_000 },
    async () => {
      await setRules({ smtpd_client_restrictions: ['reject_unknown_client_hostname'] });
      const r = await attempt({ ip: '127.0.0.11' });
      assert.equal(r.stage, 'connect');
      assert.match(r.text, /^421 4\.7\.25 /);
      const why = await rules.explain(/\(ref ([^)]+)\)/.exec(r.text)![1]!);
      assert.deepEqual(
        why?.reasons.map((x) => `${x.check}=${x.result}`),
        ['reject_unknown_client_hostname=temperror'],
      );
    },
  );

  test('check_client_access: CIDR entries, REJECT text and OK', async () => {
    await rules.accessSet('client_access', 'client', '127.0.0.16/29', 'REJECT go away');
    await rules.accessSet('client_access', 'client', '127.0.0.17', 'OK');
    await setRules({ smtpd_client_restrictions: ['check_client_access client_access', 'reject'] });
    const r = await attempt({ ip: '127.0.0.18' });
    assert.match(r.text, /^554 5\.7\.1 unknown\[127\.0\.0\.18\]: Client host rejected: go away/);
    assert.equal((await attempt({ ip: '127.0.0.17' })).code, 250, 'the more specific OK wins');
  });

  test('reject_rbl_client: a listed client is refused naming the zone and the code', async () => {
    await setRules({ smtpd_client_restrictions: ['reject_rbl_client dnsbl.test'] });
    const r = await attempt({ ip: '127.0.0.8' });
    assert.match(
      r.text,
      /^554 5\.7\.1 Service unavailable; Client host \[127\.0\.0\.8\] blocked using dnsbl\.test \(127\.0\.0\.2\)/,
    );
    assert.equal((await attempt({ ip: '127.0.0.5' })).code, 250);
  });

  test('reject_rbl_client ZONE=CODE only refuses that return code', async () => {
    await setRules({ smtpd_client_restrictions: ['reject_rbl_client dnsbl.test=127.0.0.2'] });
    assert.equal((await attempt({ ip: '127.0.0.9' })).code, 250, '127.0.0.4 is not the code asked for');
    assert.equal((await attempt({ ip: '127.0.0.8' })).code, 554);
  });

  test("reject_rbl_client ZONE=PATTERN: Postfix's [n..m] ranges and [n;m] lists of codes", async () => {
    await setRules({ smtpd_client_restrictions: ['reject_rbl_client dnsbl.test=127.0.0.[3..11]'] });
    assert.equal((await attempt({ ip: '127.0.0.8' })).code, 250, '127.0.0.2 is outside 3..11');
    assert.match(
      (await attempt({ ip: '127.0.0.9' })).text,
      /^554 5\.7\.1 Service unavailable; Client host \[127\.0\.0\.9\] blocked using dnsbl\.test \(127\.0\.0\.4\)/,
    );
    await setRules({ smtpd_client_restrictions: ['reject_rbl_client dnsbl.test=127.0.0.[2;5]'] });
    assert.equal((await attempt({ ip: '127.0.0.8' })).code, 554);
    assert.equal((await attempt({ ip: '127.0.0.9' })).code, 250, '127.0.0.4 is not in 2;5');
  });

  test('a list that refuses the query (127.255.255.x) lists nobody: the lookup failed', async () => {
    for (const entry of ['reject_rbl_client dnsbl.test', 'reject_rbl_client dnsbl.test=127.0.0.[2..11]']) {
      await setRules({ smtpd_client_restrictions: [entry] });
      const r = await attempt({ ip: '127.0.0.12' });
      assert.equal(r.stage, 'connect', entry);
      assert.match(r.text, /^421 4\.7\.1 Service temporarily unavailable: dnsbl\.test lookup failed/, entry);
      const why = await rules.explain(/\(ref ([^)]+)\)/.exec(r.text)![1]!);
      assert.deepEqual(
        why?.reasons.map((x) => [x.check, x.result, x.detail]),
        [
          [
            'reject_rbl_client',
            'temperror',
            'dnsbl.test: the list refused the query (127.255.255.254: query through a public or open resolver)',
          ],
        ],
        entry,
      );
    }
  });
});

describe('HELO and sender restrictions', () => {
  beforeEach(() => setRules(NONE));

  test('reject_invalid_helo_hostname and reject_non_fqdn_helo_hostname', async () => {
    await setRules({
      smtpd_helo_restrictions: ['reject_invalid_helo_hostname', 'reject_non_fqdn_helo_hostname'],
    });
    const bad = await attempt({ helo: 'bad_name!' });
    assert.equal(bad.stage, 'mail');
    assert.match(bad.text, /^501 5\.5\.2 <bad_name!>: Helo command rejected: Invalid name/);
    const short = await attempt({ helo: 'localhost' });
    assert.match(
      short.text,
      /^504 5\.5\.2 <localhost>: Helo command rejected: need fully-qualified hostname/,
    );
    assert.equal((await attempt({ helo: '[127.0.0.5]' })).code, 250, 'an address literal is valid');
    assert.equal((await attempt({ helo: 'client.example.net' })).code, 250);
  });

  test('reject_non_fqdn_sender', async () => {
    await setRules({ smtpd_sender_restrictions: ['reject_non_fqdn_sender'] });
    const r = await attempt({ from: 'someone@localhost' });
    assert.match(
      r.text,
      /^504 5\.5\.2 <someone@localhost>: Sender address rejected: need fully-qualified address/,
    );
    assert.equal((await attempt({ from: 'someone@sender.test' })).code, 250);
  });

  test('reject_unknown_sender_domain: NXDOMAIN and null MX refused, MX or A accepted, DNS failure deferred', async () => {
    await setRules({ smtpd_sender_restrictions: ['reject_unknown_sender_domain'] });
    const nx = await attempt({ from: 'x@nowhere.test' });
    assert.match(nx.text, /^550 5\.1\.8 <x@nowhere\.test>: Sender address rejected: Domain not found/);
    assert.equal((await attempt({ from: 'x@nullmx.test' })).code, 550);
    assert.equal((await attempt({ from: 'x@sender.test' })).code, 250);
    assert.equal((await attempt({ from: 'x@aonly.test' })).code, 250);
    const sf = await attempt({ from: 'x@servfail.test' });
    assert.match(sf.text, /^450 4\.1\.8 /);
  });

  test('an internationalized sender domain is looked up in its A-labels', { timeout: 60_000 }, async () => {
    await setRules({ smtpd_sender_restrictions: ['reject_unknown_sender_domain'] });
    assert.equal((await attempt({ from: 'x@müller.test', smtputf8: true })).code, 250);
    const nx = await attempt({ from: 'x@nöwhere.test', smtputf8: true });
    assert.equal(nx.stage, 'mail');
    assert.equal(nx.code, 550);
  });

  test('reject_unknown_sender_domain skips the domains we are final destination for', async () => {
    await p.directory.addDomain('own.test');
    await setRules({ smtpd_sender_restrictions: ['reject_unknown_sender_domain'] });
    // example.test has no DNS at all (NXDOMAIN), own.test's DNS fails (SERVFAIL): both are ours
    assert.equal((await attempt({ from: 'bob@example.test' })).code, 250);
    assert.equal((await attempt({ from: 'carol@own.test' })).code, 250);
    assert.equal((await attempt({ from: 'x@sub.example.test' })).code, 550, 'a subdomain is not ours');
  });

  test('a DNS server that never answers gives a temporary failure', async () => {
    await setRules({ smtpd_sender_restrictions: ['reject_unknown_sender_domain'] });
    const r = await attempt({ from: 'x@timeout.test' });
    assert.equal(r.stage, 'mail');
    assert.equal(r.code, 450);
  });

  test('check_sender_access: address, domain and subdomain keys; the null sender is <>', async () => {
    await rules.accessSet('sender_access', 'address', 'spammer.test', '550 5.7.1 we do not want your mail');
    await rules.accessSet('sender_access', 'address', 'friend@spammer.test', 'OK');
    await setRules({ smtpd_sender_restrictions: ['check_sender_access sender_access'] });
    const r = await attempt({ from: 'x@spammer.test' });
    assert.match(r.text, /^550 5\.7\.1 <x@spammer\.test>: Sender address rejected: we do not want your mail/);
    assert.equal((await attempt({ from: 'x@sub.spammer.test' })).code, 550, 'parent domain matches');
    assert.equal((await attempt({ from: 'friend@spammer.test' })).code, 250);
  });

  test('reject_rhsbl_sender', async () => {
    await setRules({ smtpd_sender_restrictions: ['reject_rhsbl_sender rhsbl.test'] });
    const r = await attempt({ from: 'x@spammer.test' });
    assert.match(
      r.text,
      /^554 5\.7\.1 Service unavailable; Sender address <x@spammer\.test> blocked using rhsbl\.test/,
    );
    assert.equal((await attempt({ from: 'x@sender.test' })).code, 250);
  });
});

describe('recipient restrictions', () => {
  beforeEach(() => setRules(NONE));

  test('check_recipient_access: REJECT, DEFER and HOLD (filed into Junk)', async () => {
    await rules.accessSet('recipient_access', 'address', 'bob@example.test', 'REJECT no mail for bob');
    await rules.accessSet('recipient_access', 'address', 'alice+later@example.test', 'DEFER not now');
    await rules.accessSet('recipient_access', 'address', 'alice+hold@example.test', 'HOLD');
    await setRules({ smtpd_recipient_restrictions: ['check_recipient_access recipient_access'] });
    const r = await attempt({ rcpt: 'bob@example.test' });
    assert.match(r.text, /^554 5\.7\.1 <bob@example\.test>: Recipient address rejected: no mail for bob/);
    assert.match((await attempt({ rcpt: 'alice+later@example.test' })).text, /^450 4\.7\.1 /);
    const before = p.inbox('alice@example.test', 'Junk').length;
    assert.equal((await attempt({ rcpt: 'alice+hold@example.test' })).code, 250);
    await waitFor(() => p.inbox('alice@example.test', 'Junk').length === before + 1, {
      what: 'held mail in Junk',
    });
  });

  test(
    'an entry for an address holds for its plus-addresses, as in Postfix access(5)',
    { timeout: 60_000 },
    async () => {
      await rules.accessSet('recipient_access', 'address', 'carol@example.test', 'REJECT no mail for carol');
      await rules.accessSet('sender_access', 'address', 'boss@spammer.test', 'REJECT not him');
      await rules.userListAdd('dave@example.test', 'block', 'pest@sender.test');
      await addAccount(p.directory, 'carol@example.test');
      await addAccount(p.directory, 'dave@example.test');
      await setRules({
        smtpd_sender_restrictions: ['check_sender_access sender_access'],
        smtpd_recipient_restrictions: ['check_recipient_access recipient_access', 'check_user_lists'],
      });
      // delivered to carol's mailbox all the same: her entry is hers whatever the tag
      const tagged = await attempt({ rcpt: 'carol+news@example.test' });
      assert.equal(tagged.stage, 'rcpt');
      assert.match(
        tagged.text,
        /^554 5\.7\.1 <carol\+news@example\.test>: Recipient address rejected: no mail for carol/,
      );
      const sender = await attempt({ from: 'boss+1234@spammer.test' });
      assert.equal(sender.stage, 'mail');
      assert.match(sender.text, /^554 5\.7\.1 <boss\+1234@spammer\.test>: Sender address rejected: not him/);
      // dave's own block list, whichever plus-address the mail is for, and whichever the sender uses
      for (const [from, rcpt] of [
        ['pest@sender.test', 'dave+shop@example.test'],
        ['pest+x@sender.test', 'dave@example.test'],
      ] as const) {
        const r = await attempt({ from, rcpt });
        assert.match(r.text, /^550 5\.7\.1 .*sender blocked by the recipient/, `${from} to ${rcpt}`);
      }
      assert.equal((await attempt({ from: 'other@sender.test', rcpt: 'dave+shop@example.test' })).code, 250);
      // an account whose name has the delimiter in it keeps its own lists, as the directory
      // delivers to it and not to dave
      await addAccount(p.directory, 'dave+vip@example.test');
      await rules.userListAdd('dave+vip@example.test', 'block', 'bore@sender.test');
      const own = await attempt({ from: 'bore@sender.test', rcpt: 'dave+vip@example.test' });
      assert.match(own.text, /^550 5\.7\.1 .*sender blocked by the recipient/);
      assert.equal((await attempt({ from: 'pest@sender.test', rcpt: 'dave+vip@example.test' })).code, 250);
    },
  );

  test('check_recipient_access DISCARD: 250 to the client, nothing queued', async () => {
    await rules.accessSet('recipient_access', 'address', 'alice+drop@example.test', 'DISCARD');
    await setRules({ smtpd_recipient_restrictions: ['check_recipient_access recipient_access'] });
    const discarded = async () => {
      const m = (await p.inboundRt.registry.getMetricsAsJSON()).find(
        (x) => x.name === 'mailyard_mta_inbound_messages_total',
      );
      return (m?.values ?? []).find((v) => v.labels.result === 'discarded')?.value ?? 0;
    };
    const before = await discarded();
    const r = await attempt({ rcpt: 'alice+drop@example.test' });
    assert.equal(r.code, 250);
    assert.equal(await discarded(), before + 1);
  });

  test('reject_unauth_destination refuses relaying even when the listener would route it', async () => {
    const d = await p.policy!.decide({
      stage: 'rcpt',
      origin: 'postfix',
      sessionId: 's1',
      client: { ip: '192.0.2.1', helo: 'x.example' },
      sender: 'a@sender.test',
      recipient: 'victim@elsewhere.test',
    });
    assert.equal(d.action, 'reject');
    assert.match(d.reply!.text, /Relay access denied/);
  });

  test(
    'our own internationalized domain written in U-labels is no relaying',
    { timeout: 60_000 },
    async () => {
      await addAccount(p.directory, 'erik@xn--bcher-kva.test');
      await setRules(NONE);
      assert.equal((await attempt({ rcpt: 'erik@bücher.test', smtputf8: true })).code, 250);
      assert.equal((await attempt({ rcpt: 'erik@xn--bcher-kva.test' })).code, 250);
    },
  );

  test('reject_non_fqdn_recipient', async () => {
    await setRules({ smtpd_recipient_restrictions: ['reject_non_fqdn_recipient'] });
    const d = await p.policy!.decide({
      stage: 'rcpt',
      origin: 'postfix',
      sessionId: 's2',
      client: { ip: '127.0.0.1', helo: 'x.example' },
      sender: 'a@sender.test',
      recipient: 'root@localhost',
    });
    assert.equal(d.reply?.code, 504);
  });

  test("per-user lists: a recipient's blocked sender is refused, an allowed one skips greylisting", async () => {
    await rules.userListAdd('alice@example.test', 'block', 'pest.test');
    await rules.userListAdd('alice@example.test', 'allow', 'friend@sender.test');
    await setRules({ smtpd_recipient_restrictions: ['check_user_lists', 'check_policy_greylist'] });
    const r = await attempt({ from: 'x@pest.test', rcpt: 'alice@example.test' });
    assert.match(
      r.text,
      /^550 5\.7\.1 <alice@example\.test>: Recipient address rejected: sender blocked by the recipient/,
    );
    assert.equal((await attempt({ from: 'friend@sender.test' })).code, 250, 'allowed: not greylisted');
    assert.equal((await attempt({ from: 'stranger@sender.test', ip: '127.0.0.6' })).code, 450, 'others are');
  });

  test('at the end of DATA the lists are read once, and a change is in force once announced', async () => {
    // every sender held for Junk at DATA, but a recipient's allowed ones
    await rules.accessSet('client_access', 'client', '127.0.0.9', 'HOLD');
    await rules.userListAdd('alice@example.test', 'allow', 'friend@sender.test');
    try {
      await setRules({ smtpd_data_restrictions: ['check_client_access client_access'] });
      const data = (n: number) =>
        p.policy!.decide(
          {
            stage: 'data',
            origin: 'postfix',
            sessionId: `lists-${n}`,
            client: { ip: '127.0.0.9', helo: 'x.example' },
            sender: 'friend@sender.test',
            recipients: ['alice@example.test', 'bob@example.test'],
          },
          Buffer.from('Subject: hi\r\n\r\nhello\r\n'),
        );
      const roundTrips = async () =>
        (await p.policyRt!.registry.getSingleMetric('mailyard_policy_redis_round_trips_total')?.get())?.values
          .filter((v) => v.labels.stage === 'data')
          .reduce((n, v) => n + v.value, 0) ?? 0;
      const first = await data(1);
      assert.equal(first.action, 'quarantine');
      assert.deepEqual(first.junk, ['bob@example.test'], "alice's friend is spared Junk");
      const before = await roundTrips();
      assert.deepEqual((await data(2)).junk, ['bob@example.test']);
      assert.equal(await roundTrips(), before, 'the lists kept in the service: no Redis round trip');

      await rules.userListDel('alice@example.test', 'allow', 'friend@sender.test');
      let n = 3;
      await waitFor(async () => (await data(n++)).junk.length === 2, {
        what: 'the removed allow entry no longer sparing Junk',
      });
    } finally {
      await rules.accessDel('client_access', 'client', '127.0.0.9');
      // removed above, unless the test failed before
      await rules.userListDel('alice@example.test', 'allow', 'friend@sender.test').catch(() => undefined);
    }
  });
});

describe('greylisting (controllable clock)', () => {
  beforeEach(() => setRules({ ...NONE, smtpd_recipient_restrictions: ['check_policy_greylist'] }));

  test('unknown triplet deferred, retry before the delay deferred, after it accepted and remembered', async () => {
    const t = { ip: '127.0.0.6', from: 'grey1@sender.test' };
    const first = await attempt(t);
    assert.equal(first.stage, 'rcpt');
    assert.match(
      first.text,
      /^450 4\.7\.1 <alice@example\.test>: Recipient address rejected: Greylisted, try again in 300 seconds/,
    );
    clock.now += 240_000;
    assert.match((await attempt(t)).text, /try again in 60 seconds/);
    clock.now += 61_000;
    assert.equal((await attempt(t)).code, 250, 'retried after the delay');
    clock.now += 30 * 86_400_000;
    assert.equal((await attempt(t)).code, 250, 'still known after 30 days');
    clock.now += 36 * 86_400_000;
    // a pass not seen for longer than 35 days is forgotten: Redis expiry runs on real time,
    // so the test checks the TTL instead of waiting a month
    const keys = await p.redis.redis.keys(`${p.redis.prefix}policy:grey:t:*`);
    const ttls = await Promise.all(keys.map((k) => p.redis.redis.pttl(k.slice(p.redis.prefix.length))));
    assert.ok(
      ttls.some((ms) => ms > 34 * 86_400_000 && ms <= 35 * 86_400_000),
      `TTLs ${ttls.join(',')}`,
    );
  });

  test('a client with FCrDNS whose network passed before is let through at once', async () => {
    // a network of its own (127.0.1.0/24): 127.0.0.0/24 passed in the test before
    const t = { ip: '127.0.1.5', from: 'grey2@sender.test' };
    assert.equal((await attempt(t)).code, 450);
    clock.now += 301_000;
    assert.equal((await attempt(t)).code, 250);
    // new sender, same FCrDNS client network: auto-allowed
    assert.equal(
      (await attempt({ ip: '127.0.1.5', from: 'other@sender.test', rcpt: 'bob@example.test' })).code,
      250,
    );
  });
});

describe('greylisting: the sender as postgrey keys it', () => {
  beforeEach(() => setRules({ ...NONE, smtpd_recipient_restrictions: ['check_policy_greylist'] }));

  test(
    "a list's per-message bounce address, a daily BATV tag or SRS stamp is one sender",
    { timeout: 60_000 },
    async () => {
      // no PTR: never let through for its network, every new triplet is greylisted
      const ip = '127.0.0.7';
      for (const [first, next] of [
        ['news-bounces-1001@lists.test', 'news-bounces-1002@lists.test'],
        ['prvs=1234abcdef=carol@batv.test', 'prvs=1235fedcba=Carol@batv.test'],
        ['prvs=374a1453b=dan@batv.test', 'prvs=375b2564c=dan@batv.test'],
        ['SRS0=Kjsf=5O=orig.test=erin@fwd.test', 'SRS0=OGRT=72=orig.test=erin@fwd.test'],
        ['frank+bounce-77@lists.test', 'frank+bounce-78@lists.test'],
      ]) {
        assert.equal((await attempt({ ip, from: first })).code, 450, first);
        clock.now += 301_000;
        assert.equal((await attempt({ ip, from: first })).code, 250, `${first} retried`);
        clock.now += 86_400_000;
        assert.equal((await attempt({ ip, from: next })).code, 250, `${next} after ${first}`);
      }
      // but another sender of the same domain is a triplet of its own
      assert.equal((await attempt({ ip, from: 'news-digest@lists.test' })).code, 450);
      assert.equal((await attempt({ ip, from: 'SRS0=Kjsf=5O=orig.test=gina@fwd.test' })).code, 450);
    },
  );
});

describe('greylisting suspicious clients only (the default recipient list)', () => {
  beforeEach(async () => {
    await setRules(NONE);
    await rules.reset('smtpd_recipient_restrictions');
    const v = Number(await p.redis.redis.get('policy:version'));
    await waitFor(() => p.policy!.rulesVersion >= v, { what: 'policy rules reload' });
  });

  test('a first-time sender on a client with FCrDNS is not delayed; a client without FCrDNS is greylisted', async () => {
    assert.equal((await attempt({ ip: '127.0.2.5', from: 'first@sender.test' })).code, 250);
    const t = { ip: '127.0.0.6', from: 'first@sender.test' };
    const r = await attempt(t);
    assert.equal(r.stage, 'rcpt');
    assert.match(
      r.text,
      /^450 4\.7\.1 <alice@example\.test>: Recipient address rejected: Greylisted, try again in 300 seconds/,
    );
    clock.now += 301_000;
    assert.equal((await attempt(t)).code, 250, 'retried after the delay');
    assert.equal((await attempt({ ip: '127.0.0.7', from: 'second@sender.test' })).code, 450, 'no PTR at all');
  });

  test('a client listed in GREYLIST_DNSBL is greylisted despite FCrDNS, unless the sender passes SPF', async () => {
    const r = await attempt({ ip: '127.0.0.8', from: 'x@sender.test' });
    assert.match(r.text, /^450 4\.7\.1 .*Greylisted/);
    assert.equal((await attempt({ ip: '127.0.0.8', from: 'x@spf8.test' })).code, 250, 'FCrDNS and SPF pass');
  });

  test('a GREYLIST_DNSBL that refuses our queries (127.255.255.x) greylists nobody for it', async () => {
    assert.equal((await attempt({ ip: '127.0.0.13', from: 'x@sender.test' })).code, 250);
  });
});

describe('rate limits shared across instances', () => {
  beforeEach(() => setRules({ ...NONE, smtpd_client_restrictions: ['check_rate client_connections 3/1h'] }));

  test('connections from one IP are counted across two mta-inbound instances', async () => {
    const cfg = loadConfig(mtaInboundSchema, {
      env: {},
      overrides: {
        amqp_url: p.env.AMQP_URL,
        redis_url: p.env.REDIS_URL,
        redis_prefix: p.env.REDIS_PREFIX,
        http_port: 0,
        listen_address: '127.0.0.1',
        log_level: 'silent',
        myhostname: 'mx2.mailyard.test',
        dns_servers: p.env.DNS_SERVERS,
        smtp_port: 0,
        mynetworks: '127.0.0.1/32',
        policy_enabled: true,
        directory_cache_ttl: 0,
      },
    });
    const rt = await createRuntime('mta-inbound', cfg);
    const second = buildMtaInbound(cfg, defaultDeps(cfg, rt));
    await second.start();
    try {
      const greet = async (port: number) => {
        const c = await RawSmtp.connect(port, '127.0.0.1', { localAddress: '127.0.0.30' });
        const r = await c.read(10_000);
        c.close();
        return r;
      };
      assert.equal((await greet(p.inbound.port)).code, 220);
      assert.equal((await greet(second.port)).code, 220);
      assert.equal((await greet(p.inbound.port)).code, 220);
      const r = await greet(second.port);
      assert.equal(r.code, 421);
      assert.match(r.text, /too many connections from \[127\.0\.0\.30\]/);
      assert.equal((await greet(p.inbound.port)).code, 421);
      const other = await RawSmtp.connect(second.port, '127.0.0.1', { localAddress: '127.0.0.31' });
      assert.equal((await other.read(10_000)).code, 220, 'another IP has its own counter');
      other.close();
    } finally {
      await second.stop();
      await rt.close();
    }
  });
});

describe('default per-client rates spare clients with forward-confirmed reverse DNS', () => {
  const T = { timeout: 120_000 };

  test(
    'the default lists put permit_fcrdns_client just before each per-client rate, and nothing after it',
    T,
    () => {
      for (const [list, counter] of [
        ['smtpd_client_restrictions', 'client_connections'],
        ['smtpd_sender_restrictions', 'client_messages'],
      ] as const) {
        const l = DEFAULT_RESTRICTIONS[list];
        const i = l.findIndex((e) => e.startsWith(`check_rate ${counter} `));
        assert.ok(i > 0, `${list} has check_rate ${counter}`);
        assert.equal(l[i - 1], 'permit_fcrdns_client', list);
        assert.equal(i, l.length - 1, `nothing in ${list} after the rate, which the permit would skip`);
      }
    },
  );

  test(
    'connections: a client with FCrDNS is never counted; one without is refused over the limit',
    T,
    async () => {
      await setRules({
        ...NONE,
        smtpd_client_restrictions: ['permit_fcrdns_client', 'check_rate client_connections 2/1h'],
      });
      for (let i = 0; i < 4; i++) assert.equal((await attempt({ ip: '127.0.0.5' })).code, 250, 'FCrDNS');
      // a PTR that does not resolve back is not FCrDNS
      assert.equal((await attempt({ ip: '127.0.0.6' })).code, 250);
      assert.equal((await attempt({ ip: '127.0.0.6' })).code, 250);
      const r = await attempt({ ip: '127.0.0.6' });
      assert.equal(r.stage, 'connect');
      assert.match(r.text, /^421 4\.7\.1 Error: too many connections from \[127\.0\.0\.6\]/);
    },
  );

  test('messages: a failed reverse lookup does not spare a client from the rate', T, async () => {
    await setRules({
      ...NONE,
      smtpd_sender_restrictions: ['permit_fcrdns_client', 'check_rate client_messages 1/1h'],
    });
    for (let i = 0; i < 3; i++) assert.equal((await attempt({ ip: '127.0.1.5' })).code, 250, 'FCrDNS');
    assert.equal((await attempt({ ip: '127.0.0.10' })).code, 250);
    const r = await attempt({ ip: '127.0.0.10' });
    // the rate needs the policy service: MAIL's lists run with the first RCPT
    assert.equal(r.stage, 'rcpt');
    assert.equal(r.code, 450);
  });
});

describe('live rules and explain', () => {
  test('a rule added with the CLI functions takes effect without restart; explain shows why', async () => {
    await setRules(NONE);
    assert.equal((await attempt({ ip: '127.0.0.7' })).code, 250);
    await rules.add('smtpd_client_restrictions', 'reject_unknown_reverse_client_hostname');
    const v = Number(await p.redis.redis.get('policy:version'));
    await waitFor(() => p.policy!.rulesVersion >= v);
    const r = await attempt({ ip: '127.0.0.7' });
    assert.equal(r.code, 554);
    const ref = /\(ref ([^)]+)\)/.exec(r.text)?.[1];
    assert.ok(ref, r.text);
    const why = await rules.explain(ref);
    assert.equal(why?.action, 'reject');
    assert.equal(why?.client, '127.0.0.7');
    assert.deepEqual(
      why?.reasons.map((x) => `${x.check}=${x.result}`),
      ['reject_unknown_reverse_client_hostname=reject'],
    );
  });
});
