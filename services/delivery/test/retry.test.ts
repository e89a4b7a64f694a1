// Recipients delivery cannot serve now (an alias over ALIAS_EXPANSION_LIMIT) wait out
// DELIVERY_RETRY_SCHEDULE in delivery's own delay queues, as Postfix keeps them in its
// deferred queue: the message's other recipients get theirs at once, and the deferred
// are run again on the schedule (every second here), never dead-lettered for it, until
// the directory is fixed and a retry delivers them, each copy once.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Queues, RoutingKeys, delayQueue } from '@mailyard/contracts';
import { queueDepths, waitFor } from '@mailyard/testkit';
import { crowdMail, crowdRemote, crowdForTests, team, teamRemote } from './crowd.js';
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
