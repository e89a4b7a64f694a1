// An alias that expands to more addresses than ALIAS_EXPANSION_LIMIT: as Postfix, its
// recipient is deferred (4.6.0) and the log says which and how many, so the operator can
// raise the limit; the message's other recipients get theirs, once, whatever the reruns,
// and the deferred wait in a delay queue for their retry. Retried with the limit raised,
// the alias's members get theirs and nobody a second one, whichever of the message's
// aliases expand in which run. The schedule here is one hour: the operator brings a
// retry back early with `mailyard queue retry`, or a test takes it from its delay queue
// and sends it to delivery itself, as when it falls due.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ENVELOPE_HEADER, Queues, RoutingKeys, delayQueue, type Envelope } from '@mailyard/contracts';
import type { DeferredEntry } from '@mailyard/queue-admin';
import { refuseAfterOne, waitFor } from '@mailyard/testkit';
import { remoteMembers } from './addresses.js';
import { crowdMail, crowdRemote, crowdForTests, team, teamRemote } from './crowd.js';
import { mailyardIn } from '../../../test/mailyard-cli.js';
import { envelope } from './envelope.js';

const LIMIT = 10;
/** Where the retries wait (DELIVERY_RETRY_SCHEDULE 1h): none falls due during the tests. */
const RETRY_QUEUE = delayQueue(RoutingKeys.delivery, 3_600_000);

const t = crowdForTests({ alias_expansion_limit: LIMIT, delivery_retry_schedule: '1h' });

const body = crowdMail;
const takeOutbound = () => t.takeOutbound();

/** The retry of the message's deferred recipients, taken from its delay queue: its envelope. */
async function retried(): Promise<Envelope> {
  const retry = await waitFor(async () => t.ch.get(RETRY_QUEUE, { noAck: true }), {
    timeoutMs: 30_000,
    what: 'the deferred recipients sent to the delay queue',
  });
  return JSON.parse(String(retry.properties.headers?.[ENVELOPE_HEADER])) as Envelope;
}

/** Delivery started again with this ALIAS_EXPANSION_LIMIT (its metrics start from 0). */
async function restartDelivery(limit: number): Promise<void> {
  await t.p.stopDelivery();
  await t.p.startDelivery({ alias_expansion_limit: limit });
}

/** The delivery's count of a metric (summed over its labels). */
async function metric(name: string): Promise<number> {
  const m = await t.p.deliveryRt!.registry.getSingleMetric(name)?.get();
  return m?.values.reduce((sum, v) => sum + v.value, 0) ?? 0;
}

/** A new message to these recipients, run with this limit: the retry of those it defers. */
async function sentUntilDeferred(limit: number, recipients: string[]): Promise<Envelope> {
  await restartDelivery(limit);
  await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, envelope(recipients));
  return retried();
}

/** Runs the retry with this limit, as when it falls due, until it has forwarded. */
async function forwardedWith(limit: number, env: Envelope): Promise<void> {
  await restartDelivery(limit);
  await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
  await waitFor(async () => (await metric('mailyard_delivery_forwarded_total')) > 0, {
    timeoutMs: 30_000,
    what: 'the run forwarding to outbound',
  });
}

/** Nothing left in the dead-letter queue nor waiting for a retry. */
async function assertNothingLeft(): Promise<void> {
  assert.equal((await t.ch.checkQueue(Queues.deadLetter)).messageCount, 0, 'not dead-lettered');
  assert.equal((await t.ch.checkQueue(RETRY_QUEUE)).messageCount, 0, 'no retry waiting');
}

/** Each local recipient's INBOX holds exactly one copy. */
function assertOneCopyEach(): void {
  for (const a of ['dora@example.test', ...team]) assert.equal(t.p.inbox(a).length, 1, a);
}

/** `mailyard ...` against the platform, as the operator runs it. */
const mailyard = (...argv: string[]) =>
  mailyardIn({ AMQP_URL: t.p.env.AMQP_URL!, REDIS_PREFIX: t.p.redis.prefix }, argv);

let deferredId: string;

test(
  'over the limit: the recipient is deferred, logged and listed by `mailyard queue`; one at the limit and a colleague get theirs once',
  { timeout: 60_000 },
  async () => {
    const env = envelope(['crowd@example.test', 'dora@example.test', 'team@example.test']);
    deferredId = env.queueId;
    await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
    // the others served, the deferred recipient alone waits for its retry
    await waitFor(async () => (await t.ch.checkQueue(RETRY_QUEUE)).messageCount === 1, {
      what: 'the deferred recipient in the delay queue',
    });
    const listed = await mailyard('queue', 'list', '--json');
    assert.equal(listed.code, 0, listed.stderr);
    const { nextTry, ...entry } = JSON.parse(listed.stdout) as DeferredEntry;
    const lastError =
      '4.6.0 Alias expansion error: alias expansion of crowd@example.test reached 14 addresses, over the limit of 10';
    assert.deepEqual(entry, {
      queueId: env.queueId,
      mailFrom: 'sender@remote.test',
      recipients: ['crowd@example.test'],
      attempts: 1,
      lastError,
      receivedAt: env.receivedAt,
      queue: RETRY_QUEUE,
      size: body.length,
    });
    assert.ok(Math.abs(Date.parse(nextTry) - Date.now() - 3_600_000) < 60_000, 'next try in an hour');
    const show = await mailyard('queue', 'show', env.queueId);
    assert.match(
      show.stdout,
      /^ {4}attempts 1, next try .* \(in (59|60)m\)\n {4}\(4\.6\.0 Alias expansion error: .*\)\n {4}crowd@example\.test\n/m,
    );
    assert.match(show.stdout, /Subject: all/);

    const warned = t.lines.filter((l) => l.rcpt === 'crowd@example.test' && l.status === '4.6.0');
    assert.equal(warned.length, 1, 'the deferral logged, once: the message ran once');
    assert.equal(
      warned[0]!.msg,
      'unreasonable alias expansion size for crowd@example.test: 14 addresses, ALIAS_EXPANSION_LIMIT is 10 -- deferring delivery',
    );
    assert.equal(warned[0]!.queueId, env.queueId);
    assert.equal(warned[0]!.reached, 14);
    assert.equal(warned[0]!.limit, LIMIT);
    assert.ok(
      !t.lines.some((l) => l.rcpt === 'team@example.test' && l.status === '4.6.0'),
      'the alias at the limit is not deferred',
    );
    const scheduled = t.lines.filter((l) => l.msg === 'retry scheduled' && l.queueId === env.queueId);
    assert.equal(scheduled.length, 1);
    assert.deepEqual(scheduled[0]!.rcpts, ['crowd@example.test']);
    assert.equal(scheduled[0]!.delayMs, 3_600_000);
    assert.equal(scheduled[0]!.reason, lastError);

    assertOneCopyEach();
    assert.deepEqual(await takeOutbound(), [teamRemote], "the team's external members queued once");
    assert.equal((await t.ch.checkQueue(Queues.deadLetter)).messageCount, 0, 'not dead-lettered');
    const res = await fetch(`http://127.0.0.1:${t.p.deliveryRt!.httpPort}/metrics`);
    const text = await res.text();
    assert.match(text, /mailyard_delivery_deliveries_total\{result="alias-expansion"\} 1\n/);
    assert.match(text, /mailyard_delivery_retries_total 1\n/);
  },
);

test(
  'with the limit raised, `mailyard queue retry` brings the rest of the alias, nobody twice',
  { timeout: 60_000 },
  async () => {
    assert.ok(deferredId, 'the retry of the test before');
    const deferrals = t.lines.filter((l) => l.status === '4.6.0').length;
    await restartDelivery(20);
    const from = t.lines.length;
    const retry = await mailyard('queue', 'retry', deferredId);
    assert.deepEqual(retry, { code: 0, stdout: '1 message queued for delivery\n', stderr: '' });
    // the run's last step (the team's are found queued before, and skipped)
    await waitFor(
      () => t.lines.slice(from).some((l) => l.queueId === deferredId && l.msg === 'forwarded to outbound'),
      { timeoutMs: 30_000, what: "the crowd's external members queued" },
    );
    // the team, nested in the crowd, is not in the retry: its record still counts
    assert.deepEqual(await takeOutbound(), [crowdRemote], 'only the members not queued before');
    assertOneCopyEach();
    assert.equal(t.lines.filter((l) => l.status === '4.6.0').length, deferrals, 'not deferred again');
    await waitFor(async () => (await t.ch.checkQueue(Queues.delivery)).messageCount === 0, {
      what: 'the retry done with',
    });
    await assertNothingLeft();
    assert.equal((await mailyard('queue', 'list')).stdout, 'Mail queue is empty\n');
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
    await t.p.directory.addAlias('big1@example.test', big1);
    await t.p.directory.addAlias('big2@example.test', big2);
    await t.p.directory.addAlias('small@example.test', ['small-1@far-away.test']);
    const doraBefore = t.p.inbox('dora@example.test').length;
    // both over 10: the others are served
    const first = await sentUntilDeferred(LIMIT, [
      'big1@example.test',
      'big2@example.test',
      'small@example.test',
      'dora@example.test',
    ]);
    assert.deepEqual(first.recipients, ['big1@example.test', 'big2@example.test']);
    assert.match(
      first.lastError!,
      /big1@example\.test reached 14 addresses.*big2@example\.test reached 12 addresses/,
    );
    assert.deepEqual(await takeOutbound(), [['small-1@far-away.test']]);

    // 13: big2 expands, big1 is still over
    await restartDelivery(13);
    await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, first);
    const second = await retried();
    assert.deepEqual(second.recipients, ['big1@example.test']);
    assert.equal(second.attempts, 2);
    assert.doesNotMatch(second.lastError!, /big2/);
    assert.match(second.lastError!, /big1@example\.test reached 14 addresses/);
    assert.deepEqual(await takeOutbound(), [big2]);

    // 20: both expand, and only big1's members not queued before are. Under the message's
    // queue id, on which outbound sends each recipient once: a run repeated between a
    // forward's confirm and its record (a Redis or broker error; a copy the broker gives
    // again while the test's runs) queues the same part again, which outbound drops
    await forwardedWith(20, second);
    const forwards = await t.takeOutboundEnvelopes();
    assert.ok(forwards.length > 0, 'forwarded');
    for (const f of forwards) assert.equal(f.queueId, first.queueId, "the message's own queue id");
    const own = big1.filter((t) => !big2.includes(t));
    for (const f of forwards) assert.deepEqual(f.recipients, own, 'none queued before, none left out');
    assert.equal(t.p.inbox('dora@example.test').length, doraBefore + 1, 'one copy for dora');
    await assertNothingLeft();
  },
);

test(
  'an alias partly forwarded that grows past the limit: once it expands, only the rest is queued',
  { timeout: 120_000 },
  async () => {
    // more than one message to outbound takes (see alias-outbound.test.ts)
    const members = remoteMembers('g', 2000);
    await t.p.directory.addAlias('grow@example.test', members);
    await t.p.directory.addAlias('pal@example.test', ['pal-1@far-away.test']);
    await restartDelivery(2000);
    const env = envelope(['grow@example.test', 'pal@example.test']);
    // the first message to outbound is taken, the second refused: the run fails
    const lift = await refuseAfterOne(t.p.vhost.name, Queues.outbound);
    let sent: string[][];
    let again: Envelope;
    try {
      await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
      await waitFor(async () => (await metric('mailyard_delivery_failures_total')) > 0, {
        timeoutMs: 20_000,
        what: 'the second message to outbound refused',
      });
      await t.p.stopDelivery();
      sent = await takeOutbound();
      assert.equal(sent.length, 1, 'one message to outbound');
      // grown past the limit before the message runs again: deferred
      const grown = Array.from({ length: 5 }, (_, i) => `zz-new-${i}@far-away.test`);
      await t.p.directory.addAlias('grow@example.test', grown);
      members.push(...grown);
      await t.p.startDelivery({ alias_expansion_limit: 2000 });
      again = await retried();
      assert.deepEqual(again.recipients, ['grow@example.test']);
      assert.match(again.lastError!, /grow@example\.test reached 2005 addresses/);
      sent.push(...(await takeOutbound()));
    } finally {
      await lift();
    }
    // the limit raised: the members after those queued before, nobody twice
    await forwardedWith(3000, again);
    const all = [...sent, ...(await takeOutbound())].flat();
    assert.equal(all.length, new Set(all).size, 'no address queued twice');
    assert.deepEqual(all.sort(), [...members, 'pal-1@far-away.test'].sort());
    await assertNothingLeft();
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
    await t.p.directory.addAlias('fteam@example.test', ['alice@a.example']);
    await t.p.directory.addAlias('fboard@example.test', ['zoe@z.example']);
    await t.p.directory.addAlias('fall@example.test', all);
    const retry = await sentUntilDeferred(LIMIT, [
      'fteam@example.test',
      'fboard@example.test',
      'fall@example.test',
    ]);
    assert.deepEqual(retry.recipients, ['fall@example.test']);
    assert.match(retry.lastError!, /fall@example\.test reached 12 addresses/);
    assert.deepEqual(await takeOutbound(), [['alice@a.example', 'zoe@z.example']]);
    // meanwhile the alias over the limit's members join the team; the limit raised, the
    // retry falls due
    await t.p.directory.addAlias('fteam@example.test', ['adam@a.example', 'mike@m.example']);
    await forwardedWith(20, retry);
    // members of all@ since acceptance, the board's zoe once (alice: the team's, queued)
    assert.deepEqual(await takeOutbound(), [all.filter((t) => t !== 'zoe@z.example').sort()]);
    await assertNothingLeft();
  },
);

test(
  "a message in flight through an upgrade: the earlier version's forwarding records still count",
  { timeout: 60_000 },
  async () => {
    const targets = (tag: string) => [1, 2, 3].map((i) => `${tag}-${i}@far-away.test`);
    for (const tag of ['oa', 'ob', 'oc']) await t.p.directory.addAlias(`${tag}@example.test`, targets(tag));
    const env = envelope(['oa@example.test', 'ob@example.test', 'oc@example.test']);
    // as that version left it: one record for the message, its targets queued up to ob-2
    await t.p.redis.redis.set(`forwarded-upto:${env.queueId}`, 'ob-2@far-away.test', 'EX', 3600);
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
    const [next, found] = await t.p.redis.redis.scan(
      cursor,
      'MATCH',
      `${t.p.redis.prefix}*${queueId}*`,
      'COUNT',
      1000,
    );
    keys.push(...found.map((k) => k.slice(t.p.redis.prefix.length)));
    cursor = next;
  } while (cursor !== '0');
  return keys;
}

test(
  'a run that defers again keeps what was done on record for DELIVERY_DEDUPE_TTL from then',
  { timeout: 120_000 },
  async () => {
    const ttl = 14 * 24 * 3600; // DELIVERY_DEDUPE_TTL's default
    await restartDelivery(LIMIT);
    const env = envelope([
      'crowd@example.test',
      'dora@example.test',
      'small@example.test',
      'nobody@example.test',
    ]);
    await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
    await retried();
    await takeOutbound();
    const keys = await recordsOf(env.queueId);
    // dora's copy, the DSN for nobody, small's member forwarded
    assert.equal(keys.filter((k) => k.startsWith('delivered:')).length, 2);
    assert.ok(keys.includes(`forward-progress:${env.queueId}`));
    // as if they had waited for all but a minute of their time
    const r = t.p.redis.redis;
    for (const k of keys) await r.expire(k, 60);
    // run again (the broker gives it back, its ack lost) before the alias is fixed: it
    // defers the alias again
    await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
    await retried();
    for (const k of keys) assert.ok((await r.ttl(k)) > ttl - 3600, `${k} kept ${await r.ttl(k)} s`);
    await assertNothingLeft();
  },
);
