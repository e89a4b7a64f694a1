import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, beforeEach, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import type { PolicyDecision } from '@mailyard/contracts';
import { Directory } from '@mailyard/directory';
import { Registry, createLogger } from '@mailyard/observability';
import { LocalPolicy, engineSettings, type PolicyInput } from '@mailyard/policy-engine';
import { policyReject } from '@mailyard/policy-client';
import { PolicyKeys, PolicyRules } from '@mailyard/policy-rules';
import { RawSmtp, startPrivateRedis, waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';

// The cheap stages decided inside mta-inbound (@mailyard/policy-engine's LocalPolicy)
// with the policy service's rules and settings: the same verdicts as the service's, the
// changes followed live, a Redis outage a 4xx, and one RPC per message where the
// stages before DATA are all cheap.

let p: Platform;
let rules: PolicyRules;

before(async () => {
  p = await startPlatform({
    // recipient lookups and domains cached, as mta-inbound runs by default
    // DATA decided here gets the service's time: 2 s, less than a lookup's 3 s timeout
    inbound: {
      mynetworks: '127.0.0.1/32',
      policy_timeout: '20s',
      policy_data_timeout: '2s',
      directory_cache_ttl: '60s',
    },
    policy: { mynetworks: '127.0.0.1/32' },
    zone: {
      '5.0.0.127.in-addr.arpa': { PTR: ['client.example.net'] },
      'client.example.net': { A: ['127.0.0.5'] },
      'sender.test': { MX: [{ priority: 10, exchange: 'mx.sender.test' }] },
      'servfail.test': { SERVFAIL: true },
      'spf-fail.test': { TXT: ['v=spf1 -all'], MX: [{ priority: 10, exchange: 'mx.sender.test' }] },
      'spf-stall.test': {
        TXT: ['v=spf1 include:stall.test -all'],
        MX: [{ priority: 10, exchange: 'mx.sender.test' }],
      },
      'stall.test': { TIMEOUT: true },
      'dmarc-reject.test': { TXT: ['v=spf1 -all'], MX: [{ priority: 10, exchange: 'mx.sender.test' }] },
      '_dmarc.dmarc-reject.test': { TXT: ['v=DMARC1; p=reject'] },
    },
  });
  await addAccount(p.directory, 'alice@example.test');
  rules = new PolicyRules(p.redis.redis, p.redis.prefix);
});
after(() => p.close());

const CHEAP = {
  smtpd_client_restrictions: [
    'permit_mynetworks',
    'check_client_access client_access',
    'permit_fcrdns_client',
  ],
  smtpd_helo_restrictions: ['reject_invalid_helo_hostname', 'reject_non_fqdn_helo_hostname'],
  smtpd_sender_restrictions: [
    'reject_non_fqdn_sender',
    'check_sender_access sender_access',
    'reject_unknown_sender_domain',
  ],
  smtpd_relay_restrictions: ['permit_mynetworks', 'reject_unauth_destination'],
  smtpd_recipient_restrictions: [
    'reject_non_fqdn_recipient',
    'check_recipient_access recipient_access',
    'check_user_lists',
    'check_policy_greylist_suspicious',
  ],
  smtpd_data_restrictions: [],
};

/** Waits until the policy service and mta-inbound decide with the rules as they are now. */
async function inForce(): Promise<void> {
  const v = Number(await p.redis.redis.get('policy:version'));
  await waitFor(() => p.policy!.rulesVersion >= v, { what: 'policy rules reload' });
  await waitFor(
    async () => {
      const m = await p.inboundRt.registry
        .getSingleMetric('mailyard_mta_inbound_local_policy_rules_version')
        ?.get();
      return (m?.values[0]?.value ?? -1) >= v;
    },
    { what: 'the rules in force in mta-inbound' },
  );
}

async function setRules(lists: Record<string, string[]>): Promise<void> {
  for (const [name, entries] of Object.entries(lists)) await rules.set(name, entries);
  await inForce();
}

/** mta-inbound's decisions so far, by stage and where they were made. */
async function decided(): Promise<Record<string, number>> {
  const m = await p.inboundRt.registry.getSingleMetric('mailyard_mta_inbound_policy_decisions_total')?.get();
  const out: Record<string, number> = {};
  for (const v of m?.values ?? []) out[`${v.labels.stage}:${v.labels.where}`] = v.value;
  return out;
}
const delta = (a: Record<string, number>, b: Record<string, number>) =>
  Object.fromEntries(
    Object.entries(b)
      .map(([k, v]) => [k, v - (a[k] ?? 0)] as const)
      .filter(([, v]) => v > 0),
  );

/** The checks of the default DATA list; none needs the service (the scanners are asked from the intake). */
const DATA_CHECKS = ['check_virus', 'check_authentication', 'reject_spf_fail', 'check_spam', 'check_bulk'];

async function attempt(from = 'someone@sender.test', rcpt = 'alice@example.test') {
  const c = await RawSmtp.connect(p.inbound.port, '127.0.0.1', { localAddress: '127.0.0.5' });
  try {
    const steps: [string, string | null][] = [
      ['connect', null],
      ['helo', 'EHLO client.example.net'],
      ['mail', `MAIL FROM:<${from}>`],
      ['rcpt', `RCPT TO:<${rcpt}>`],
      ['data', 'DATA'],
    ];
    for (const [stage, line] of steps) {
      const r = line === null ? await c.read(15_000) : await c.cmd(line);
      if (r.code >= 400) return { stage, code: r.code, text: r.text };
    }
    c.write(`From: ${from}\r\nTo: ${rcpt}\r\nSubject: hi\r\n\r\nhello\r\n.\r\n`);
    const r = await c.read(15_000);
    return { stage: 'end', code: r.code, text: r.text };
  } finally {
    c.close();
  }
}

describe('stages decided in the intake', { timeout: 120_000 }, () => {
  beforeEach(() => setRules(CHEAP));

  test('cheap stages need no RPC; greylisting still asks', async () => {
    const before = await decided();
    assert.equal((await attempt()).code, 250);
    assert.deepEqual(delta(before, await decided()), {
      'connect:local': 1,
      'mail:local': 1,
      'rcpt:local': 1,
      'data:local': 1,
    });
    // every triplet greylisted: shared state, so RCPT goes to the policy service
    await setRules({ smtpd_recipient_restrictions: ['check_policy_greylist'] });
    const mid = await decided();
    const r = await attempt();
    assert.equal(r.stage, 'rcpt');
    assert.match(r.text, /^450 4\.7\.1 /);
    assert.equal(delta(mid, await decided())['rcpt:service'], 1);
  });

  test('SPF, DKIM and DMARC at DATA are checked here when no scanner is configured', async () => {
    await setRules({ smtpd_data_restrictions: DATA_CHECKS });
    const before = await decided();
    assert.equal((await attempt('someone@sender.test')).code, 250);
    assert.deepEqual(delta(before, await decided()), {
      'connect:local': 1,
      'mail:local': 1,
      'rcpt:local': 1,
      'data:local': 1,
    });
    const filed = await waitFor(
      () =>
        p
          .inbox('alice@example.test')
          .map((f) => readFileSync(f, 'latin1'))
          .find((m) => /^X-Mailyard-Policy: inbox; spf=none/m.test(m)),
      { what: 'the message with the verdict of its checks' },
    );
    const results = /^Authentication-Results: .*(?:\r\n[ \t].*)*/m.exec(filed)?.[0] ?? '';
    assert.match(results, /spf=none/, 'our Authentication-Results');

    const mid = await decided();
    const r = await attempt('someone@spf-fail.test');
    assert.equal(r.stage, 'end');
    assert.match(r.text, /^550 5\.7\.23 /, 'refused by reject_spf_fail');
    assert.equal(delta(mid, await decided())['data:local'], 1);
  });

  test('checks at DATA that outlast the policy timeout get the default action', async () => {
    await setRules({ smtpd_data_restrictions: DATA_CHECKS });
    const before = await decided();
    // the record the sender domain's SPF includes never comes: its lookup times out after 3 s
    const r = await attempt('someone@spf-stall.test');
    assert.equal(r.stage, 'end');
    // as when the service does not answer in time; not the SPF temperror of the lookup
    assert.match(r.text, /^451 4\.3\.5 Server configuration problem/);
    assert.equal(delta(before, await decided())['data:service'], undefined, 'not asked again');
  });

  test('an access table entry and a list change take effect in the running intake', async () => {
    await rules.accessSet('sender_access', 'address', 'someone@sender.test', 'REJECT go away');
    try {
      // announced, and loaded by mta-inbound (a change is in force once its announcement arrives)
      await inForce();
      const before = await decided();
      const r = await attempt();
      assert.equal(r.stage, 'mail');
      assert.match(r.text, /^554 5\.7\.1 <someone@sender\.test>: Sender address rejected: go away \(ref /);
      assert.equal(delta(before, await decided())['mail:local'], 1);
      const ref = /\(ref ([^)]+)\)/.exec(r.text)![1]!;
      const why = await rules.explain(ref);
      assert.deepEqual(
        why?.reasons.map((x) => `${x.check}=${x.result}`),
        ['check_sender_access=reject'],
      );
    } finally {
      await rules.accessDel('sender_access', 'address', 'someone@sender.test');
    }
    await inForce();
    assert.equal((await attempt()).code, 250);
    // a list change: written, announced, and in force once mta-inbound has loaded it
    await rules.set('smtpd_helo_restrictions', ['reject']);
    await inForce();
    const r = await attempt();
    assert.equal(r.stage, 'mail');
    assert.match(r.text, /^554 5\.7\.1 /);
  });
  test('MAIL needing the service goes with the first RCPT: one request for both', async () => {
    await setRules({
      smtpd_sender_restrictions: ['check_rate client_messages 1/1h'],
      smtpd_recipient_restrictions: ['check_policy_greylist'],
    });
    const before = await decided();
    const first = await attempt();
    assert.equal(first.stage, 'rcpt');
    assert.match(first.text, /^450 4\.7\.1 /, 'greylisted');
    // MAIL's rate and RCPT's greylisting: one RPC, where they were two
    assert.deepEqual(delta(before, await decided()), {
      'connect:local': 1,
      'mail:with-rcpt': 1,
      'rcpt:service': 1,
    });
    // the second message of this client is over MAIL's rate: refused at RCPT, with MAIL's reply
    const second = await attempt();
    assert.equal(second.stage, 'rcpt');
    assert.match(second.text, /^450 4\.7\.1 Error: too many messages from \[127\.0\.0\.5\]/);
  });

  test("MAIL's Junk verdict, decided with the first RCPT, holds the whole message", async () => {
    await setRules({
      smtpd_sender_restrictions: ['check_sender_access sender_access', 'check_rate client_messages 100/1h'],
      smtpd_recipient_restrictions: ['reject_non_fqdn_recipient'],
    });
    await rules.accessSet('sender_access', 'address', 'held@sender.test', 'HOLD suspicious');
    try {
      await inForce();
      const before = await decided();
      assert.equal((await attempt('held@sender.test')).code, 250);
      assert.equal(delta(before, await decided())['mail:with-rcpt'], 1);
      await waitFor(
        () =>
          p
            .inbox('alice@example.test', 'Junk')
            .some((f) => readFileSync(f, 'latin1').includes('From: held@sender.test')),
        { what: 'the held message in Junk' },
      );
    } finally {
      await rules.accessDel('sender_access', 'address', 'held@sender.test');
    }
  });

  test('a user list is read once, and its changes are in force at once', async () => {
    const roundTrips = async () =>
      (
        await p.inboundRt.registry
          .getSingleMetric('mailyard_mta_inbound_local_policy_redis_round_trips_total')
          ?.get()
      )?.values.reduce((n, v) => n + v.value, 0) ?? 0;
    assert.equal((await attempt('friend@sender.test')).code, 250);
    const before = await roundTrips();
    assert.equal((await attempt('friend@sender.test')).code, 250);
    assert.equal(await roundTrips(), before, "alice's lists kept in mta-inbound: no Redis round trip");

    await rules.userListAdd('alice@example.test', 'block', 'friend@sender.test');
    try {
      // announced on the rules' channel: the copy is dropped once the announcement arrives
      const r = await waitFor(
        async () => {
          const a = await attempt('friend@sender.test');
          return a.stage === 'rcpt' ? a : null;
        },
        { what: 'the block list in force in mta-inbound' },
      );
      assert.match(r.text, /^5\d\d 5\.7\.1 /);
    } finally {
      await rules.userListDel('alice@example.test', 'block', 'friend@sender.test');
    }
    await waitFor(async () => (await attempt('friend@sender.test')).code === 250, {
      what: 'the unblocked sender accepted again',
    });
  });
});

/** A LocalPolicy as mta-inbound builds one, on the platform's Redis unless told. */
function localCopy(redis: Redis = p.redis.redis, prefix = p.redis.prefix, registry = new Registry()) {
  const logger = createLogger('test', 'silent');
  const resolver = p.inboundRt.resolver;
  return new LocalPolicy({
    redis,
    prefix,
    directory: new Directory(redis),
    resolver,
    logger,
    registry,
    service: 'test',
  });
}

/** A Redis server of the test's own, which it may stop, and a client of it. */
async function privateRedis() {
  const priv = await startPrivateRedis();
  const redis = new Redis(priv.port, '127.0.0.1', { maxRetriesPerRequest: 1, lazyConnect: false });
  redis.on('error', () => undefined);
  return { priv, redis };
}

/** A decision without the reference its refusal names (each decision has its own). */
const strip = (d: PolicyDecision) => ({
  ...d,
  reply: d.reply ? { ...d.reply, text: d.reply.text.replace(/ \(ref [^)]+\)$/, '') } : null,
});

describe('the same verdicts here and in the service', { timeout: 120_000 }, () => {
  let local: LocalPolicy;
  before(async () => {
    await setRules(CHEAP);
    local = localCopy();
    await local.start();
  });
  after(() => local.stop());

  const base = (over: Partial<PolicyInput>): PolicyInput => ({
    stage: 'mail',
    origin: 'mta-inbound',
    sessionId: `agree-${Math.random().toString(36).slice(2)}`,
    client: { ip: '127.0.0.5', hostname: 'client.example.net', helo: 'client.example.net' },
    user: null,
    sender: 'someone@sender.test',
    recipients: [],
    tls: false,
    ...over,
  });

  test('for accepted and refused senders, HELO names, recipients and clients', async () => {
    await rules.accessSet('client_access', 'client', '127.0.0.9', 'DEFER later');
    const inputs: PolicyInput[] = [
      base({ stage: 'connect', sender: null }),
      base({ stage: 'connect', sender: null, client: { ip: '127.0.0.9', hostname: null, helo: '' } }),
      base({}),
      base({ sender: 'someone@servfail.test' }),
      base({ sender: 'someone@nowhere.invalid' }),
      base({ sender: 'nodomain' }),
      base({ client: { ip: '127.0.0.5', hostname: null, helo: 'bad..name' } }),
      base({ client: { ip: '127.0.0.5', hostname: null, helo: 'single' } }),
      base({ stage: 'rcpt', recipient: 'alice@example.test', recipients: [] }),
      base({ stage: 'rcpt', recipient: 'someone@elsewhere.test', recipients: [] }),
      base({ stage: 'rcpt', recipient: 'someone', recipients: [] }),
    ];
    const v = Number(await p.redis.redis.get('policy:version'));
    await waitFor(() => (local.rulesVersion ?? -1) >= v, { what: 'the access entry loaded here' });
    // the service holds its own copy of the tables, in force once it has loaded them too
    await waitFor(() => p.policy!.rulesVersion >= v, { what: 'the access entry loaded in the service' });
    for (const input of inputs) {
      const here = await local.decide(input);
      assert.ok(here, `decided here: ${JSON.stringify(input)}`);
      const there = await p.policy!.decide({ ...input, sessionId: input.sessionId + '-svc' });
      assert.deepEqual(strip(here), strip(there), JSON.stringify(input));
    }
  });

  test('at DATA: SPF and DMARC results, signed mail, bulk mail', async () => {
    await setRules({ ...CHEAP, smtpd_data_restrictions: DATA_CHECKS });
    const v = Number(await p.redis.redis.get('policy:version'));
    await waitFor(() => (local.rulesVersion ?? -1) >= v, { what: 'the DATA list loaded here' });
    const message = (from: string, extra = '') =>
      Buffer.from(
        `${extra}From: <${from}>\r\nTo: <alice@example.test>\r\nSubject: hi\r\n` +
          `Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m@x>\r\n\r\nhello\r\n`,
      );
    const signature =
      'DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=sender.test; s=s1;\r\n' +
      ' h=from:to:subject; bh=frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=; b=AAAA\r\n';
    const cases: [string, Buffer][] = [
      ['someone@sender.test', message('someone@sender.test')],
      ['someone@spf-fail.test', message('someone@spf-fail.test')],
      ['someone@dmarc-reject.test', message('someone@dmarc-reject.test')],
      ['someone@sender.test', message('someone@sender.test', signature)],
      ['someone@sender.test', message('someone@sender.test', 'List-Unsubscribe: <https://x.test/u>\r\n')],
    ];
    for (const [sender, msg] of cases) {
      const input = base({
        stage: 'data',
        queueId: `Q${Math.random().toString(36).slice(2, 10).toUpperCase()}`,
        sender,
        recipients: ['alice@example.test'],
        size: msg.length,
      });
      const here = await local.decide(input, msg);
      assert.ok(here, `decided here: ${sender}`);
      const there = await p.policy!.decide(input, msg);
      assert.deepEqual(strip(here), strip(there), `${sender}: ${msg.toString().split('\r\n')[0]}`);
    }
  });
});

describe('the copy in the intake and Redis', { timeout: 120_000 }, () => {
  test('a scanner the intake cannot connect to leaves DATA to the service', async () => {
    const { priv, redis } = await privateRedis();
    const local = localCopy(redis, '');
    try {
      await new PolicyRules(redis, '').set('smtpd_data_restrictions', DATA_CHECKS);
      const settings = { mynetworks: [], relay_domains: [], myhostname: 'mx.test' };
      await redis.hset(
        PolicyKeys.engineConfig,
        'test',
        JSON.stringify(engineSettings({ ...settings, rspamd_url: 'http://127.0.0.1:9' } as never)),
      );
      await local.start();
      await waitFor(() => local.rulesVersion !== null, { what: 'the change channel followed' });
      const msg = Buffer.from('From: <a@scanned.test>\r\nSubject: hi\r\n\r\nhello\r\n');
      const input: PolicyInput = {
        stage: 'data',
        origin: 'mta-inbound',
        sessionId: `scanned-${Math.random().toString(36).slice(2)}`,
        client: { ip: '127.0.0.5', hostname: null, helo: 'client.example.net' },
        user: null,
        sender: 'a@scanned.test',
        recipients: ['alice@example.test'],
        tls: false,
        size: msg.length,
      };
      // rspamd where nothing listens (an address only the service's host reaches)
      assert.equal(await local.decide(input, msg), null, 'asked of the service');
    } finally {
      await local.stop();
      redis.disconnect();
      await priv.close();
    }
  });

  test('decides without Redis while it follows changes; an outage is a 4xx once noticed', async () => {
    const { priv, redis } = await privateRedis();
    const registry = new Registry();
    const local = localCopy(redis, '', registry);
    const roundTrips = async () =>
      (
        await registry.getSingleMetric('mailyard_test_local_policy_redis_round_trips_total')?.get()
      )?.values.reduce((n, v) => n + v.value, 0) ?? 0;
    const input = (sender: string): PolicyInput => ({
      stage: 'mail',
      origin: 'mta-inbound',
      sessionId: `outage-${Math.random().toString(36).slice(2)}`,
      client: { ip: '127.0.0.5', hostname: null, helo: 'client.example.net' },
      user: null,
      sender,
      recipients: [],
      tls: false,
    });
    const code = (d: PolicyDecision | null) =>
      d ? (policyReject(d, 'mail')?.code ?? 250) : 'asked the service';
    try {
      const admin = new PolicyRules(redis, '');
      await admin.set('smtpd_sender_restrictions', ['check_sender_access sender_access']);
      await admin.accessSet('sender_access', 'address', 'spam@sender.test', 'REJECT no');
      await redis.hset(
        PolicyKeys.engineConfig,
        'test',
        JSON.stringify(engineSettings({ mynetworks: [], relay_domains: [], myhostname: 'mx.test' } as never)),
      );
      await local.start();
      await waitFor(() => local.rulesVersion !== null, { what: 'the change channel followed' });
      const before = await roundTrips();
      assert.equal(code(await local.decide(input('spam@sender.test'))), 554, 'the entry refuses');
      assert.equal(code(await local.decide(input('friend@sender.test'))), 250, 'no entry');
      assert.equal(await roundTrips(), before, 'the tables in process: no Redis round trip');

      await priv.kill();
      // once the intake has noticed, nothing is decided from a copy that may miss changes
      await waitFor(() => local.rulesVersion === null, { what: 'the outage noticed' });
      const outcome = await local.decide(input('spam@sender.test')).then(
        (d) => code(d),
        () => 451, // the intake answers a thrown error 451 4.3.0
      );
      assert.ok(typeof outcome === 'number' && outcome >= 400 && outcome < 500, `got ${outcome}`);

      // a change made as Redis comes back is in force here once the channel is followed again
      await priv.start();
      await admin.accessSet('sender_access', 'address', 'friend@sender.test', 'REJECT not you either');
      const v = Number(await redis.get(PolicyKeys.version));
      await waitFor(() => (local.rulesVersion ?? -1) >= v, { what: 'the channel followed again' });
      assert.equal(code(await local.decide(input('friend@sender.test'))), 554);
    } finally {
      await local.stop();
      redis.disconnect();
      await priv.close();
    }
  });
});
