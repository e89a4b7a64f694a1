// Recipients delivery cannot serve now (an alias over ALIAS_EXPANSION_LIMIT) wait out
// DELIVERY_RETRY_SCHEDULE in delivery's own delay queues, as Postfix keeps them in its
// deferred queue: the message's other recipients get theirs at once, and the deferred
// are run again on the schedule (every second here), never dead-lettered for it, until
// the directory is fixed and a retry delivers them, each copy once, or until
// MAXIMAL_QUEUE_LIFETIME has passed and the sender gets them back in a DSN.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { Queues, RoutingKeys, delayQueue, type Envelope } from '@mailyard/contracts';
import { interleavedRedis, queueDepths, waitFor } from '@mailyard/testkit';
import { crowdMail, crowdRemote, crowdForTests, team, teamRemote } from './crowd.js';
import { addAccount, type Platform } from '../../../test/harness.js';
import { envelope } from './envelope.js';

const LIMIT = 10;
const RETRY_QUEUE = delayQueue(RoutingKeys.delivery, 1000);
/** DELIVERY_MAX_ATTEMPTS's default: the runs after which a failing message is dead-lettered. */
const MAX_ATTEMPTS = 5;

const t = crowdForTests({ alias_expansion_limit: LIMIT, delivery_retry_schedule: '1s' });

const body = crowdMail;
const takeOutbound = () => t.takeOutbound();

/** The t.lines of a message with this text. */
const linesOf = (queueId: string, msg: string) =>
  t.lines.filter((l) => l.queueId === queueId && l.msg === msg);

/** Waits until no message is in `delivery` (ready or being run) nor in its delay queue. */
async function allRunsDone(): Promise<void> {
  await waitFor(
    async () => {
      // one listing: a run publishes its retry before its message is acked, and the
      // delay queue hands it back the same way, so it is always in one of them
      const depths = await queueDepths(t.p.vhost.name);
      return !depths.get(Queues.delivery) && !depths.get(RETRY_QUEUE);
    },
    { timeoutMs: 20_000, what: 'no message left to run' },
  );
}

test(
  'an alias over the limit is retried on the schedule, not dead-lettered; fixed, the next retry delivers it once',
  { timeout: 90_000 },
  async () => {
    const env = envelope(['crowd@example.test', 'dora@example.test', 'team@example.test']);
    await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
    // the others at once
    await waitFor(() => ['dora@example.test', ...team].every((a) => t.p.inbox(a).length === 1), {
      what: 'the other recipients delivered',
    });
    const outbound: string[] = [];
    await waitFor(async () => outbound.push(...(await takeOutbound()).flat()) > 0, {
      what: "the team's external members queued",
    });
    assert.deepEqual(outbound, teamRemote);

    // run again and again, past the runs after which a failure is dead-lettered
    await waitFor(() => linesOf(env.queueId, 'retry scheduled').length > MAX_ATTEMPTS, {
      timeoutMs: 30_000,
      what: `more than ${MAX_ATTEMPTS} retries`,
    });
    const retries = linesOf(env.queueId, 'retry scheduled');
    assert.deepEqual(
      retries.slice(0, MAX_ATTEMPTS + 1).map((l) => [l.attempts, l.rcpts, l.delayMs]),
      Array.from({ length: MAX_ATTEMPTS + 1 }, (_, i) => [i + 1, ['crowd@example.test'], 1000]),
    );
    assert.match(String(retries[0]!.reason), /^4\.6\.0 Alias expansion error: alias expansion of crowd@/);
    assert.equal((await t.ch.checkQueue(Queues.deadLetter)).messageCount, 0, 'not dead-lettered');

    // the directory fixed: the crowd shrunk below the limit (the team, served, no longer in it)
    await t.p.directory.delAlias('crowd@example.test', 'team@example.test');
    await waitFor(async () => outbound.push(...(await takeOutbound()).flat()) > teamRemote.length, {
      timeoutMs: 20_000,
      what: "the crowd's own external members queued",
    });
    await allRunsDone();
    assert.deepEqual(outbound.sort(), [...crowdRemote, ...teamRemote].sort(), 'each external member once');
    assert.deepEqual(await takeOutbound(), []);
    for (const a of ['dora@example.test', ...team]) assert.equal(t.p.inbox(a).length, 1, `one copy for ${a}`);
    // the run that delivered it scheduled nothing more
    const forwarded = t.lines.findLastIndex(
      (l) => l.queueId === env.queueId && l.msg === 'forwarded to outbound',
    );
    assert.ok(
      !t.lines.slice(forwarded).some((l) => l.queueId === env.queueId && l.msg === 'retry scheduled'),
      'no retry after the one that delivered',
    );
    assert.equal((await t.ch.checkQueue(Queues.deadLetter)).messageCount, 0, 'not dead-lettered');
  },
);

/** An alias over the limit (11 external members), for the tests below. */
async function addBigAlias(alias: string): Promise<void> {
  const members = Array.from({ length: LIMIT + 1 }, (_, i) => `${alias.split('@')[0]}-${i}@far-away.test`);
  await t.p.directory.addAlias(alias, members);
}

/** A big alias (addBigAlias) shrunk to the limit: its members forwarded, every run done. */
async function shrinkBigAlias(alias: string): Promise<void> {
  await t.p.directory.delAlias(alias, `${alias.split('@')[0]}-0@far-away.test`);
  const forwarded: string[] = [];
  await waitFor(async () => forwarded.push(...(await takeOutbound()).flat()) === LIMIT, {
    what: "the alias's members forwarded",
  });
  await allRunsDone();
}

/** Delivery started again with these settings over the file's (and these dependencies). */
async function restartDelivery(
  config: Record<string, unknown> = {},
  deps?: Parameters<Platform['startDelivery']>[1],
): Promise<void> {
  await t.p.stopDelivery();
  await t.p.startDelivery(config, deps);
}

/**
 * A message from `sender` (an account) to `alias` (an alias over the limit), both added
 * now; with the record of the delay warning naming the alias, and the claim a run takes
 * to send it.
 */
async function lateMessage(
  sender: string,
  alias: string,
): Promise<{ env: Envelope; record: string; claim: string }> {
  await addAccount(t.p.directory, sender);
  await addBigAlias(alias);
  const env = { ...envelope([alias]), mailFrom: sender };
  const hash = createHash('sha256').update(`warned:${alias}`).digest('hex').slice(0, 16);
  return { env, record: `delivered:${env.queueId}:${hash}`, claim: `returning:${env.queueId}:${hash}` };
}

/**
 * Delivery started again with DELAY_WARNING_TIME 2 s, its Redis doing `meanwhile` once it
 * has answered the first command `at` (interleavedRedis).
 */
async function warningWithRedisAt(
  at: Parameters<typeof interleavedRedis>[1],
  meanwhile: () => Promise<unknown>,
): Promise<void> {
  await restartDelivery({ delay_warning_time: '2s' }, (own) => ({
    ...own,
    redis: interleavedRedis(own.redis, at, meanwhile),
  }));
}

/**
 * `env` (to an alias over the limit) run with this MAXIMAL_QUEUE_LIFETIME until its
 * deferred recipient is given up and every run is done (a DSN through delivery too).
 */
async function sentUntilGivenUp(env: Envelope, lifetime: string): Promise<void> {
  await restartDelivery({ maximal_queue_lifetime: lifetime });
  try {
    await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
    await waitFor(() => linesOf(env.queueId, 'deferred past MAXIMAL_QUEUE_LIFETIME, given up').length, {
      timeoutMs: 20_000,
      what: 'the recipient given up',
    });
    await allRunsDone();
  } finally {
    await restartDelivery();
  }
  assert.ok(linesOf(env.queueId, 'retry scheduled').length >= 1, 'retried before');
  assert.equal(linesOf(env.queueId, 'deferred past MAXIMAL_QUEUE_LIFETIME, given up').length, 1);
  assert.equal((await t.ch.checkQueue(Queues.deadLetter)).messageCount, 0, 'not dead-lettered');
}

test(
  'past MAXIMAL_QUEUE_LIFETIME the deferred recipient is returned to the sender once, with its last status',
  { timeout: 60_000 },
  async () => {
    await addAccount(t.p.directory, 'sam@example.test');
    await addBigAlias('big@example.test');
    const dora = t.p.inbox('dora@example.test').length;
    // retried every second, then given up: the DSN comes back through delivery
    await sentUntilGivenUp(
      { ...envelope(['big@example.test', 'dora@example.test']), mailFrom: 'sam@example.test' },
      '3s',
    );
    const dsns = t.p.inbox('sam@example.test');
    assert.equal(dsns.length, 1, 'one DSN');
    const text = readFileSync(dsns[0]!, 'utf8');
    assert.match(text, /^Subject: Undelivered Mail Returned to Sender\r$/m);
    assert.match(
      text,
      /^Final-Recipient: rfc822; big@example\.test\r\nAction: failed\r\nStatus: 4\.6\.0\r$/m,
    );
    assert.match(
      text,
      /^Diagnostic-Code: x-mailyard; 4\.6\.0 Alias expansion error: alias expansion of big@example\.test reached 11 addresses, over the limit of 10 \(message expired after 0 hours in the queue\)\r$/m,
    );
    assert.doesNotMatch(text, /dora@example\.test/, 'only the recipient given up');
    assert.equal(t.p.inbox('dora@example.test').length, dora + 1, 'dora got hers at once');
    assert.deepEqual(await takeOutbound(), [], "nothing of the alias's");
  },
);

/**
 * A retry from `sender` to `alias` (made over the limit), back from its delay queue past
 * MAXIMAL_QUEUE_LIFETIME (5 days): its run gives the recipient up.
 */
async function expiredRetry(alias: string, sender: string): Promise<Envelope> {
  await addAccount(t.p.directory, sender);
  await addBigAlias(alias);
  return {
    ...envelope([alias]),
    mailFrom: sender,
    receivedAt: new Date(Date.now() - 6 * 86_400_000).toISOString(),
    attempts: 30,
    lastError: '4.6.0 Alias expansion error',
  };
}

test(
  'two retries of one message given up together (a crash left both queued): the sender gets one DSN',
  { timeout: 60_000 },
  async () => {
    // a run killed between its retry's confirm and its message's ack: the message runs
    // again and queues a second retry of the same recipient; both fall due together
    const retry = await expiredRetry('big-twice@example.test', 'sid@example.test');
    await Promise.all([
      t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, retry),
      t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, retry),
    ]);
    await waitFor(() => t.p.inbox('sid@example.test').length > 0, { what: 'the DSN filed' });
    await allRunsDone();
    assert.equal(t.p.inbox('sid@example.test').length, 1, 'one DSN');
    assert.equal(linesOf(retry.queueId, 'bounce sent').length, 1, 'one DSN sent');
    assert.equal(linesOf(retry.queueId, 'deferred past MAXIMAL_QUEUE_LIFETIME, given up').length, 1);
    assert.equal((await t.ch.checkQueue(Queues.deadLetter)).messageCount, 0, 'not dead-lettered');
  },
);

test(
  'a claim to return a recipient left by a run that died before its DSN: the DSN is still sent',
  { timeout: 60_000 },
  async () => {
    const retry = await expiredRetry('big-claimed@example.test', 'sol@example.test');
    // the claim of a run killed before its DSN was confirmed, lapsing in 2 s
    const hash = createHash('sha256').update('expired:big-claimed@example.test').digest('hex').slice(0, 16);
    await t.p.redis.redis.set(`returning:${retry.queueId}:${hash}`, 'dead-run', 'PX', 2000);
    await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, retry);
    await waitFor(() => t.p.inbox('sol@example.test').length > 0, { what: 'the DSN filed' });
    await allRunsDone();
    assert.equal(t.p.inbox('sol@example.test').length, 1, 'one DSN');
  },
);

test(
  'past MAXIMAL_QUEUE_LIFETIME a bounce (null sender) is given up without a DSN',
  { timeout: 60_000 },
  async () => {
    await addBigAlias('big-null@example.test');
    const env = { ...envelope(['big-null@example.test']), mailFrom: '' };
    await sentUntilGivenUp(env, '2s');
    assert.equal(linesOf(env.queueId, 'null sender: nothing returned').length, 1);
    assert.deepEqual(await takeOutbound(), [], 'no DSN');
  },
);

test(
  "what a message's runs did stays on record while a deferred recipient may wait, whatever DELIVERY_DEDUPE_TTL",
  { timeout: 60_000 },
  async () => {
    await addBigAlias('big-kept@example.test');
    // a minute, where the recipient may wait MAXIMAL_QUEUE_LIFETIME (5 days)
    await restartDelivery({ delivery_dedupe_ttl: 60 });
    try {
      const env = envelope(['big-kept@example.test', 'dora@example.test']);
      await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
      await waitFor(() => linesOf(env.queueId, 'retry scheduled').length, { what: 'the retry scheduled' });
      // dora's copy: were it forgotten, the alias fixed to lead to her would file it again
      const marker = `delivered:${env.queueId}:${createHash('sha256').update('dora@example.test').digest('hex').slice(0, 16)}`;
      assert.ok((await t.p.redis.redis.ttl(marker)) > 6 * 86_400 - 60, 'kept for 5 days and one');
      // the alias shrunk to the limit: its members forwarded, the message done with
      await t.p.directory.delAlias('big-kept@example.test', 'big-kept-0@far-away.test');
      const forwarded: string[] = [];
      await waitFor(async () => forwarded.push(...(await takeOutbound()).flat()) === LIMIT, {
        what: "the alias's members forwarded",
      });
      await allRunsDone();
    } finally {
      await restartDelivery();
    }
  },
);

test(
  'past DELAY_WARNING_TIME the sender is told once that the recipient is still being retried',
  { timeout: 60_000 },
  async () => {
    await addAccount(t.p.directory, 'sue@example.test');
    await addBigAlias('big-late@example.test');
    await restartDelivery({ delay_warning_time: '2s' });
    try {
      const env = { ...envelope(['big-late@example.test']), mailFrom: 'sue@example.test' };
      await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
      const warning = await waitFor(() => t.p.inbox('sue@example.test')[0], {
        timeoutMs: 20_000,
        what: 'the delay warning in the sender’s INBOX',
      });
      const text = readFileSync(warning, 'utf8');
      assert.match(text, /^Subject: Delayed Mail \(still being retried\)\r$/m);
      assert.match(
        text,
        /^Final-Recipient: rfc822; big-late@example\.test\r\nAction: delayed\r\nStatus: 4\.6\.0\r$/m,
      );
      assert.match(
        text,
        /^Diagnostic-Code: x-mailyard; 4\.6\.0 Alias expansion error: alias expansion of big-late@/m,
      );
      // MAXIMAL_QUEUE_LIFETIME (5 days) after acceptance
      const until = /^Will-Retry-Until: (.*)\r$/m.exec(text)?.[1];
      assert.equal(Date.parse(until!), Math.floor(Date.parse(env.receivedAt) / 1000) * 1000 + 5 * 86_400_000);
      // retried twice more without a second warning
      const warnedAt = linesOf(env.queueId, 'retry scheduled').length;
      await waitFor(() => linesOf(env.queueId, 'retry scheduled').length >= warnedAt + 2, {
        what: 'two more retries',
      });
      // the alias shrunk to the limit: delivered, nothing more for the sender
      await shrinkBigAlias('big-late@example.test');
      assert.equal(t.p.inbox('sue@example.test').length, 1, 'one warning, no failure');
      assert.equal(linesOf(env.queueId, 'delay warning sent').length, 1);
    } finally {
      await restartDelivery();
    }
  },
);

test(
  'a run that dies between claiming a delay warning and sending it: a later run sends it, once',
  { timeout: 60_000 },
  async () => {
    const { env, record, claim } = await lateMessage('sid-late@example.test', 'big-lost@example.test');
    // the first command about the warning (its claim) done, and then the run is gone before
    // its DSN: Redis's answer lost, its claim left behind, lapsing in 2 s
    await warningWithRedisAt(
      (_command, args) => args.includes(record),
      async () => {
        await t.p.redis.redis.pexpire(claim, 2000);
        throw new Error('the run died here');
      },
    );
    try {
      await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
      await waitFor(
        () => linesOf(env.queueId, 'delay warning not sent, it waits for the next retry').length,
        {
          what: 'the run that died with the warning claimed',
        },
      );
      await waitFor(() => t.p.inbox('sid-late@example.test').length, {
        timeoutMs: 20_000,
        what: 'the delay warning sent by a later run',
      });
      // the alias shrunk to the limit: delivered, nothing more for the sender
      await shrinkBigAlias('big-lost@example.test');
      assert.equal(t.p.inbox('sid-late@example.test').length, 1, 'one warning');
      assert.equal(linesOf(env.queueId, 'delay warning sent').length, 1);
    } finally {
      await restartDelivery();
    }
  },
);

test(
  'a delay warning another run is sending holds up no run: the message is done once fixed',
  { timeout: 60_000 },
  async () => {
    const { env, claim } = await lateMessage('tom-late@example.test', 'big-claimed@example.test');
    // another run's claim on the warning, held as long as a run's (RETURN_CLAIM_MS)
    await t.p.redis.redis.set(claim, 'another-run', 'PX', 60_000);
    await restartDelivery({ delay_warning_time: '2s' });
    try {
      await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
      // runs 3 s after acceptance and more: past DELAY_WARNING_TIME
      await waitFor(() => linesOf(env.queueId, 'retry scheduled').length >= 4, {
        timeoutMs: 20_000,
        what: 'four retries',
      });
      // every run acked well before the claim lapses: none waited for it
      await shrinkBigAlias('big-claimed@example.test');
      assert.equal(linesOf(env.queueId, 'delay warning sent').length, 0, 'left to the claim’s run');
    } finally {
      await t.p.redis.redis.del(claim);
      await restartDelivery();
    }
  },
);

test(
  'a delay warning sent whose record Redis fails to write: no later retry sends it again',
  { timeout: 60_000 },
  async () => {
    const { env, record, claim } = await lateMessage('rae-late@example.test', 'big-unrecorded@example.test');
    // the warning sent, and its record's write fails (undone here, its answer an error)
    await warningWithRedisAt(
      // the record written by its own script (Claims.record), the first of its keys
      (command, args) => command === 'eval' && args[2] === record,
      async () => {
        await t.p.redis.redis.del(record);
        throw new Error('Redis is gone');
      },
    );
    try {
      await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
      await waitFor(() => t.p.inbox('rae-late@example.test').length, {
        timeoutMs: 20_000,
        what: 'the delay warning',
      });
      const warnedAt = linesOf(env.queueId, 'retry scheduled').length;
      await waitFor(() => linesOf(env.queueId, 'retry scheduled').length >= warnedAt + 2, {
        what: 'two more retries',
      });
      // the alias shrunk to the limit: delivered, nothing more for the sender
      await shrinkBigAlias('big-unrecorded@example.test');
      assert.equal(t.p.inbox('rae-late@example.test').length, 1, 'one warning');
      assert.equal(linesOf(env.queueId, 'delay warning sent').length, 1);
      assert.equal(
        linesOf(
          env.queueId,
          'delay warning sent but not recorded: a run after its claim lapses sends it again',
        ).length,
        1,
      );
      assert.equal(linesOf(env.queueId, 'delay warning not sent, it waits for the next retry').length, 0);
    } finally {
      await t.p.redis.redis.del(claim);
      await restartDelivery();
    }
  },
);
