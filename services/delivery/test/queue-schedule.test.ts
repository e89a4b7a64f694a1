// Delivery on a retry schedule of its own (DELIVERY_RETRY_SCHEDULE 45m, none of the
// default schedule's delays): `mailyard queue`, run without delivery's settings as an
// operator's shell or the console's process is, lists, shows and retries what waits in
// its delay queue.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RoutingKeys, delayQueue } from '@mailyard/contracts';
import { DeferredIndex } from '@mailyard/queue-admin';
import { waitFor } from '@mailyard/testkit';
import { crowdForTests, crowdMail } from './crowd.js';
import { envelope } from './envelope.js';
import { mailyardIn } from '../../../test/mailyard-cli.js';

const RETRY_QUEUE = delayQueue(RoutingKeys.delivery, 45 * 60_000);

const t = crowdForTests({ alias_expansion_limit: 10, delivery_retry_schedule: '45m' });

const mailyard = (...argv: string[]) =>
  mailyardIn({ AMQP_URL: t.p.env.AMQP_URL!, REDIS_PREFIX: t.p.redis.prefix }, argv);

test(
  'a recipient deferred on the schedule: listed, shown, and brought back by retry --all even unindexed',
  { timeout: 60_000 },
  async () => {
    const env = envelope(['crowd@example.test']);
    await t.p.inboundRt.bus.publishMail(RoutingKeys.delivery, crowdMail, env);
    await waitFor(async () => (await t.ch.checkQueue(RETRY_QUEUE)).messageCount === 1, {
      what: 'the deferred recipient in the delay queue',
    });
    const listed = await mailyard('queue', 'list');
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(
      listed.stdout,
      new RegExp(`^${env.queueId} .*\\n {4}attempts 1, next try .* \\(in 4[45]m\\)`),
    );
    assert.match((await mailyard('queue', 'show', env.queueId)).stdout, /Subject: all/);

    // its entry missing, as when Redis refused it at the deferral
    await new DeferredIndex(t.p.redis.redis).remove(env.queueId, env.recipients);
    const from = t.lines.length;
    const retry = await mailyard('queue', 'retry', '--all');
    assert.deepEqual(retry, { code: 0, stdout: '1 message queued for delivery\n', stderr: '' });
    // run again at once (and, the limit being what it was, deferred a second time)
    await waitFor(
      () =>
        t.lines
          .slice(from)
          .some((l) => l.msg === 'retry scheduled' && l.queueId === env.queueId && l.attempts === 2),
      { what: 'the recipient run again', timeoutMs: 30_000 },
    );
  },
);
