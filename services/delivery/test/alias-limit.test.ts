// An alias that expands to more addresses than ALIAS_EXPANSION_LIMIT: as Postfix, its
// recipient is deferred (4.6.0) and the log says which and how many, so the operator can
// raise the limit; the message's other recipients get theirs, once, whatever the reruns.
// Run again with the limit raised, the alias's members get theirs and nobody a second one,
// whichever of the message's aliases expand in which run.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connect, type Channel, type ChannelModel } from 'amqplib';
import { ENVELOPE_HEADER, Headers, Queues, RoutingKeys, type Envelope } from '@mailyard/contracts';
import { createLogger } from '@mailyard/observability';
import { refuseAfterOne, waitFor } from '@mailyard/testkit';
import { startPlatform, type Platform } from '../../../test/harness.js';
import { remoteMembers } from './addresses.js';
import { addCrowd, crowdRemote, team, teamRemote } from './crowd.js';
import { envelope } from './envelope.js';

const LIMIT = 10;

interface Line {
  level: number;
  msg: string;
  [field: string]: unknown;
}
const lines: Line[] = [];

let p: Platform;
let conn: ChannelModel;
let ch: Channel;
before(async () => {
  p = await startPlatform({
    delivery: { alias_expansion_limit: LIMIT },
    deliveryLogger: createLogger('delivery', 'info', {
      write: (line: string) => void lines.push(JSON.parse(line) as Line),
    }),
  });
  await addCrowd(p.directory);
  conn = await connect(p.vhost.url);
  ch = await conn.createChannel();
});
after(async () => {
  await conn?.close();
  await p?.close();
});

const body = Buffer.from(
  'From: sender@remote.test\r\nTo: crowd@example.test\r\nSubject: all\r\n\r\nHello\r\n',
);

/** Takes every message in `outbound` now: the recipients of each. */
async function takeOutbound(): Promise<string[][]> {
  const out: string[][] = [];
  for (let m; (m = await ch.get(Queues.outbound, { noAck: true }));)
    out.push((JSON.parse(String(m.properties.headers?.[ENVELOPE_HEADER])) as Envelope).recipients);
  return out;
}

/** The message once it is dead-lettered (its runs used up): its envelope and reason. */
async function deadLettered(): Promise<{ env: Envelope; reason: string }> {
  const dead = await waitFor(async () => ch.get(Queues.deadLetter, { noAck: true }), {
    timeoutMs: 45_000,
    what: 'the message dead-lettered after its runs',
  });
  return {
    env: JSON.parse(String(dead.properties.headers?.[ENVELOPE_HEADER])) as Envelope,
    reason: String(dead.properties.headers?.[Headers.deadLetterReason]),
  };
}

/** Delivery started again with this ALIAS_EXPANSION_LIMIT (its metrics start from 0). */
async function restartDelivery(limit: number): Promise<void> {
  await p.stopDelivery();
  await p.startDelivery({ alias_expansion_limit: limit });
}

/** The delivery's count of a metric (summed over its labels). */
async function metric(name: string): Promise<number> {
  const m = await p.deliveryRt!.registry.getSingleMetric(name)?.get();
  return m?.values.reduce((sum, v) => sum + v.value, 0) ?? 0;
}

/** A new message to these recipients, run with this limit until it is dead-lettered. */
async function sentUntilDead(
  limit: number,
  recipients: string[],
): Promise<{ env: Envelope; reason: string }> {
  await restartDelivery(limit);
  await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, envelope(recipients));
  return deadLettered();
}

/** Runs the message again with this limit, as moved back from the dead-letter queue, until it has forwarded. */
async function forwardedWith(limit: number, env: Envelope): Promise<void> {
  await restartDelivery(limit);
  await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
  await waitFor(async () => (await metric('mailyard_delivery_forwarded_total')) > 0, {
    timeoutMs: 30_000,
    what: 'the run forwarding to outbound',
  });
}

/** Each local recipient's INBOX holds exactly one copy. */
function assertOneCopyEach(): void {
  for (const a of ['dora@example.test', ...team]) assert.equal(p.inbox(a).length, 1, a);
}

let deferredEnv: Envelope;

test(
  'over the limit: the recipient is deferred and logged; one at the limit and a colleague get theirs once',
  { timeout: 60_000 },
  async () => {
    const env = envelope(['crowd@example.test', 'dora@example.test', 'team@example.test']);
    await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
    // run again after a pause, each run skipping what is done, until the attempts are used up
    const dead = await deadLettered();
    assert.match(dead.reason, /4\.6\.0 Alias expansion error/);
    assert.match(dead.reason, /crowd@example\.test reached 14 addresses, over the limit of 10/);
    deferredEnv = dead.env;
    assert.equal(deferredEnv.queueId, env.queueId);

    const warned = lines.filter((l) => l.rcpt === 'crowd@example.test' && l.status === '4.6.0');
    assert.ok(warned.length >= 1, 'the deferral logged');
    assert.equal(
      warned[0]!.msg,
      'unreasonable alias expansion size for crowd@example.test: 14 addresses, ALIAS_EXPANSION_LIMIT is 10 -- deferring delivery',
    );
    assert.equal(warned[0]!.queueId, env.queueId);
    assert.equal(warned[0]!.reached, 14);
    assert.equal(warned[0]!.limit, LIMIT);
    assert.ok(
      !lines.some((l) => l.rcpt === 'team@example.test' && l.status === '4.6.0'),
      'the alias at the limit is not deferred',
    );

    assertOneCopyEach();
    assert.deepEqual(await takeOutbound(), [teamRemote], "the team's external members queued once");
    const res = await fetch(`http://127.0.0.1:${p.deliveryRt!.httpPort}/metrics`);
    assert.match(
      await res.text(),
      new RegExp(`mailyard_delivery_deliveries_total\\{result="alias-expansion"\\} ${warned.length}`),
    );
  },
);

test(
  'with the limit raised, the message run again reaches the rest of the alias, nobody twice',
  { timeout: 60_000 },
  async () => {
    assert.ok(deferredEnv, 'the message of the test before');
    const deferrals = lines.filter((l) => l.status === '4.6.0').length;
    await restartDelivery(20);
    // as an operator moves it back from the dead-letter queue
    const from = lines.length;
    await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, deferredEnv);
    // the run's last step (the team's are found queued before, and skipped)
    await waitFor(
      () =>
        lines.slice(from).some((l) => l.queueId === deferredEnv.queueId && l.msg === 'forwarded to outbound'),
      { timeoutMs: 30_000, what: "the crowd's external members queued" },
    );
    assert.deepEqual(await takeOutbound(), [crowdRemote], 'only the members not queued before');
    assertOneCopyEach();
    assert.equal(lines.filter((l) => l.status === '4.6.0').length, deferrals, 'not deferred again');
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0);
  },
);

test(
  'deferred aliases expanding in different runs: each member queued once, whichever expand together',
  { timeout: 120_000 },
  async () => {
    const big2 = Array.from({ length: 12 }, (_, i) => `big2-${String(i).padStart(2, '0')}@far-away.test`);
    // 13 of its own and one it shares with big2
    const big1 = [
      ...Array.from({ length: 13 }, (_, i) => `big1-${String(i).padStart(2, '0')}@far-away.test`),
      big2[5]!,
    ];
    await p.directory.addAlias('big1@example.test', big1);
    await p.directory.addAlias('big2@example.test', big2);
    await p.directory.addAlias('small@example.test', ['small-1@far-away.test']);
    const doraBefore = p.inbox('dora@example.test').length;
    // both over 10: the others are served
    const first = await sentUntilDead(LIMIT, [
      'big1@example.test',
      'big2@example.test',
      'small@example.test',
      'dora@example.test',
    ]);
    assert.match(
      first.reason,
      /big1@example\.test reached 14 addresses.*big2@example\.test reached 12 addresses/,
    );
    assert.deepEqual(await takeOutbound(), [['small-1@far-away.test']]);

    // 13: big2 expands, big1 is still over
    await restartDelivery(13);
    await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, first.env);
    const second = await deadLettered();
    assert.doesNotMatch(second.reason, /big2/);
    assert.match(second.reason, /big1@example\.test reached 14 addresses/);
    assert.deepEqual(await takeOutbound(), [big2]);

    // 20: both expand, and only big1's members not queued before are
    await forwardedWith(20, second.env);
    assert.deepEqual(await takeOutbound(), [big1.filter((t) => !big2.includes(t))]);
    assert.equal(p.inbox('dora@example.test').length, doraBefore + 1, 'one copy for dora');
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0);
  },
);

test(
  'an alias partly forwarded that grows past the limit: once it expands, only the rest is queued',
  { timeout: 120_000 },
  async () => {
    // more than one message to outbound takes (see alias-outbound.test.ts)
    const members = remoteMembers('g', 2000);
    await p.directory.addAlias('grow@example.test', members);
    await p.directory.addAlias('pal@example.test', ['pal-1@far-away.test']);
    await restartDelivery(2000);
    const env = envelope(['grow@example.test', 'pal@example.test']);
    // the first message to outbound is taken, the second refused: the run fails
    const lift = await refuseAfterOne(p.vhost.name, Queues.outbound);
    let sent: string[][];
    let again: Envelope;
    try {
      await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
      await waitFor(async () => (await metric('mailyard_delivery_failures_total')) > 0, {
        timeoutMs: 20_000,
        what: 'the second message to outbound refused',
      });
      await p.stopDelivery();
      sent = await takeOutbound();
      assert.equal(sent.length, 1, 'one message to outbound');
      // grown past the limit before the message runs again: deferred, dead-lettered
      const grown = Array.from({ length: 5 }, (_, i) => `zz-new-${i}@far-away.test`);
      await p.directory.addAlias('grow@example.test', grown);
      members.push(...grown);
      await p.startDelivery({ alias_expansion_limit: 2000 });
      const dead = await deadLettered();
      assert.match(dead.reason, /grow@example\.test reached 2005 addresses/);
      sent.push(...(await takeOutbound()));
      again = dead.env;
    } finally {
      await lift();
    }
    // the limit raised: the members after those queued before, nobody twice
    await forwardedWith(3000, again);
    const all = [...sent, ...(await takeOutbound())].flat();
    assert.equal(all.length, new Set(all).size, 'no address queued twice');
    assert.deepEqual(all.sort(), [...members, 'pal-1@far-away.test'].sort());
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0);
  },
);

test(
  "members added to an alias between runs: a deferred alias's own members still get theirs",
  { timeout: 120_000 },
  async () => {
    // adam sorts before the team's only target, mike between it and the board's; zoe is
    // the board's too
    const shared = ['adam@a.example', 'mike@m.example', 'zoe@z.example'];
    const all = [...shared, ...Array.from({ length: 9 }, (_, i) => `all-${i}@far-away.test`)];
    await p.directory.addAlias('fteam@example.test', ['alice@a.example']);
    await p.directory.addAlias('fboard@example.test', ['zoe@z.example']);
    await p.directory.addAlias('fall@example.test', all);
    const dead = await sentUntilDead(LIMIT, [
      'fteam@example.test',
      'fboard@example.test',
      'fall@example.test',
    ]);
    assert.match(dead.reason, /fall@example\.test reached 12 addresses/);
    assert.deepEqual(await takeOutbound(), [['alice@a.example', 'zoe@z.example']]);
    // meanwhile the alias over the limit's members join the team; the limit raised, the
    // message moved back from the dead-letter queue
    await p.directory.addAlias('fteam@example.test', ['adam@a.example', 'mike@m.example']);
    await forwardedWith(20, dead.env);
    // members of all@ since acceptance, the board's zoe once (alice: the team's, queued)
    assert.deepEqual(await takeOutbound(), [all.filter((t) => t !== 'zoe@z.example').sort()]);
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0);
  },
);

test(
  "a message in flight through an upgrade: the earlier version's forwarding records still count",
  { timeout: 60_000 },
  async () => {
    const targets = (tag: string) => [1, 2, 3].map((i) => `${tag}-${i}@far-away.test`);
    for (const tag of ['oa', 'ob', 'oc']) await p.directory.addAlias(`${tag}@example.test`, targets(tag));
    const env = envelope(['oa@example.test', 'ob@example.test', 'oc@example.test']);
    // as that version left it: one record for the message, its targets queued up to ob-2
    await p.redis.redis.set(`forwarded-upto:${env.queueId}`, 'ob-2@far-away.test', 'EX', 3600);
    await forwardedWith(LIMIT, env);
    assert.deepEqual(await takeOutbound(), [
      ['ob-3@far-away.test', 'oc-1@far-away.test', 'oc-2@far-away.test', 'oc-3@far-away.test'],
    ]);
  },
);

/** The message's records in Redis (markers, forwarding progress), without the prefix. */
async function recordsOf(queueId: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await p.redis.redis.scan(
      cursor,
      'MATCH',
      `${p.redis.prefix}*${queueId}*`,
      'COUNT',
      1000,
    );
    keys.push(...found.map((k) => k.slice(p.redis.prefix.length)));
    cursor = next;
  } while (cursor !== '0');
  return keys;
}

test(
  'a message that fails again keeps what was done on record for DELIVERY_DEDUPE_TTL from then',
  { timeout: 120_000 },
  async () => {
    const ttl = 14 * 24 * 3600; // DELIVERY_DEDUPE_TTL's default
    const dead = await sentUntilDead(LIMIT, [
      'crowd@example.test',
      'dora@example.test',
      'small@example.test',
      'nobody@example.test',
    ]);
    await takeOutbound();
    const keys = await recordsOf(dead.env.queueId);
    // dora's copy, the DSN for nobody, small's member forwarded
    assert.equal(keys.filter((k) => k.startsWith('delivered:')).length, 2);
    assert.ok(keys.includes(`forward-progress:${dead.env.queueId}`));
    // as if they had waited in the dead-letter queue for all but a minute of their time
    const r = p.redis.redis;
    for (const k of keys) await r.expire(k, 60);
    // moved back before the alias is fixed: it fails and waits again
    await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, dead.env);
    await deadLettered();
    for (const k of keys) assert.ok((await r.ttl(k)) > ttl - 3600, `${k} kept ${await r.ttl(k)} s`);
  },
);
