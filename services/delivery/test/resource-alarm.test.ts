// RabbitMQ under a memory alarm, on a node of the test's own: it tells a connection of the
// alarm only once that connection publishes, and holds that first publish unread until the
// alarm ends, when it is queued. Delivery's publishes (a forward, a DSN, a retry) are made
// for a message it holds meanwhile: each must be queued once, not given up on after the
// confirm timeout and published again when the message runs again.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, type Channel, type ChannelModel } from 'amqplib';
import { loadConfig } from '@mailyard/config';
import { Bus } from '@mailyard/bus';
import { Queues, RoutingKeys } from '@mailyard/contracts';
import { createRuntime, type Runtime } from '@mailyard/runtime';
import { startPrivateRabbit, testBootSettings, waitFor, type PrivateRabbit } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { buildDelivery, defaultDeps, deliverySchema, type DeliveryService } from '../src/index.js';
import { envelope } from './envelope.js';

/** The confirm timeout of the instances' bus, past which a publish used to be given up on. */
const CONFIRM_TIMEOUT_MS = 2000;

/**
 * How long the instances' claim to return a recipient holds unless renewed: a third of
 * delivery's own (RETURN_CLAIM_MS), so that waiting past it takes less than a minute. Its
 * renewal, every third of it, still leaves seconds to spare on a busy machine.
 */
const RETURN_CLAIM_MS = 20_000;

let rabbit: PrivateRabbit;
let p: Platform;
let conn: ChannelModel;
let ch: Channel;

/** Messages of the delivery queue ready and unacknowledged, tab-separated. */
const deliveryQueue = async () =>
  (await rabbit.ctl('list_queues', '--no-table-headers', 'name', 'messages_ready', 'messages_unacknowledged'))
    .split('\n')
    .find((l) => l.startsWith(`${Queues.delivery}\t`))
    ?.slice(Queues.delivery.length + 1);

/**
 * A delivery instance of its own (a connection of its own, giving up on a confirm after
 * CONFIRM_TIMEOUT_MS unless a handler's), taking one message at a time.
 */
const startInstance = async (): Promise<{ bus: Bus; svc: DeliveryService }> => {
  const cfg = loadConfig(deliverySchema, {
    env: {},
    overrides: {
      ...testBootSettings(rabbit.url, p.env.REDIS_URL!),
      redis_prefix: p.redis.prefix,
      maildir_root: p.maildir,
      directory_cache_ttl: 0,
      delivery_prefetch: 1,
    },
  });
  const rt = await createRuntime('delivery', cfg);
  const bus = new Bus({
    url: rabbit.url,
    logger: rt.logger,
    name: 'mailyard-delivery',
    publishTimeoutMs: CONFIRM_TIMEOUT_MS,
  });
  bus.start();
  const svc = buildDelivery(cfg, { ...defaultDeps(cfg, rt), bus, returnClaimMs: RETURN_CLAIM_MS });
  instances.push({ rt, svc });
  await bus.waitConnected();
  await svc.start();
  return { bus, svc };
};
const instances: { rt: Runtime; svc: DeliveryService }[] = [];
const stopInstances = async () => {
  for (const { rt, svc } of instances.splice(0)) {
    await svc.stop();
    await rt.close();
  }
};

const alarm = (on: boolean) => rabbit.memoryAlarm(on);

before(async () => {
  rabbit = await startPrivateRabbit();
  p = await startPlatform({ amqpUrl: () => rabbit.url, withDelivery: false });
  await addAccount(p.directory, 'ida@example.test');
  await p.directory.addAlias('team@example.test', ['ida@example.test', 'far@remote.test']);
  conn = await connect(rabbit.url);
  ch = await conn.createChannel();
});

after(async () => {
  if (rabbit) await alarm(false).catch(() => undefined);
  await conn?.close();
  await stopInstances();
  await p?.close();
  await rabbit?.close();
});

test(
  'a forward made as a memory alarm goes off is queued once, when the alarm ends',
  { timeout: 90_000 },
  async (t) => {
    await p.inboundRt.bus.publishMail(
      RoutingKeys.delivery,
      Buffer.from('Subject: team news\r\n\r\nhi\r\n'),
      envelope(['team@example.test']),
    );
    await alarm(true);
    // ended for the next test also when this one fails before it ends it
    t.after(() => alarm(false));
    const { bus } = await startInstance();
    // ida's copy filed; the forward to far@remote.test sent, and the connection blocked
    await waitFor(() => p.inbox('ida@example.test').length === 1, { what: "ida's copy" });
    await waitFor(() => bus.blocked !== null, { what: 'the connection blocked' });
    // longer than a confirm may take unless the connection is blocked
    await sleep(CONFIRM_TIMEOUT_MS + 1000);
    const held = await deliveryQueue();
    // else every queue's counts say where the message went (queued on, dead-lettered)
    if (held !== '0\t1')
      assert.fail(
        `the message is not held (ready, unacked: ${held}); queues:\n` +
          (await rabbit.ctl('list_queues', 'name', 'messages_ready', 'messages_unacknowledged')),
      );

    await alarm(false);
    // the message's run over: acked, neither ready nor held
    await waitFor(async () => (await deliveryQueue()) === '0\t0', {
      timeoutMs: 20_000,
      what: 'the message acked',
    });
    assert.equal((await ch.checkQueue(Queues.outbound)).messageCount, 1, 'forwarded once');
    assert.equal(p.inbox('ida@example.test').length, 1, 'filed once');
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0, 'not dead-lettered');
  },
);

test(
  'two instances returning one recipient while an alarm holds the DSN past its claim send one DSN',
  { timeout: 150_000 },
  async () => {
    await stopInstances();
    await ch.purgeQueue(Queues.outbound);
    // a retry published twice (a run killed between its confirm and its ack), whose
    // recipient is gone since acceptance
    const env = envelope(['gone@example.test']);
    const body = Buffer.from('Subject: twice\r\n\r\nhi\r\n');
    await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
    await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
    await waitFor(async () => (await deliveryQueue()) === '2\t0', { what: 'both copies queued' });
    await alarm(true);
    const digest = createHash('sha256').update('gone:gone@example.test').digest('hex').slice(0, 16);
    const claim = `returning:${env.queueId}:${digest}`;
    // A claims the recipient and publishes its DSN, which the broker holds
    const a = await startInstance();
    await waitFor(async () => (await p.redis.redis.pttl(claim)) > 0, { what: "A's claim" });
    await waitFor(() => a.bus.blocked !== null, { what: "A's connection blocked" });
    const claimed = Date.now();
    // B runs the other copy, finds A's claim and waits for it; its connection has not
    // published since the alarm, so the broker has not told it of the alarm yet
    await startInstance();
    await waitFor(async () => (await deliveryQueue()) === '0\t2', { what: 'B given the other copy' });
    // past the claim's lease, A's claim is still there: renewed while its publish waits
    const lapsed: number[] = [];
    while (Date.now() - claimed < RETURN_CLAIM_MS + 5000) {
      if ((await p.redis.redis.pttl(claim)) <= 0) lapsed.push(Date.now() - claimed);
      await sleep(1000);
    }
    assert.equal(await deliveryQueue(), '0\t2', 'both copies held: neither ready nor acked');

    await alarm(false);
    await waitFor(async () => (await deliveryQueue()) === '0\t0', {
      timeoutMs: 20_000,
      what: 'both copies acked',
    });
    assert.equal((await ch.checkQueue(Queues.outbound)).messageCount, 1, 'one DSN queued');
    assert.deepEqual(lapsed, [], 'the claim held while the DSN waited');
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0, 'not dead-lettered');
  },
);
