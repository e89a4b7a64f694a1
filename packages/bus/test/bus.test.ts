import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connect, type Channel, type ConsumeMessage } from 'amqplib';
import { ENVELOPE_HEADER, Headers, PolicyRpc, Queues, RoutingKeys } from '@mailyard/contracts';
import { createLogger } from '@mailyard/observability';
import {
  amqpFrames,
  createVhost,
  startTcpProxy,
  waitFor,
  type TcpProxy,
  type TestVhost,
} from '@mailyard/testkit';
import {
  BackendUnavailableError,
  Bus,
  BusUnavailableError,
  PoisonMessageError,
  UnroutableError,
} from '../src/index.js';
import { policyRequest } from './fixtures.js';

let vhost: TestVhost;
let proxy: TcpProxy;
const logger = createLogger('bus-test', 'silent');

before(async () => {
  vhost = await createVhost();
  proxy = await startTcpProxy({ host: '127.0.0.1', port: 5672 });
});
after(async () => {
  await proxy.close();
  await vhost.delete();
});

const viaProxy = () => `amqp://guest:guest@127.0.0.1:${proxy.port}/${encodeURIComponent(vhost.name)}`;

test('declares the whole topology and confirms many publishes in flight at once', async () => {
  const bus = new Bus({ url: vhost.url, logger, name: 'test' });
  bus.start();
  await bus.waitConnected();
  const started = Date.now();
  await Promise.all(
    Array.from({ length: 500 }, (_, i) =>
      bus.publish({ routingKey: RoutingKeys.outbound, body: Buffer.from(`m${i}`) }),
    ),
  );
  const elapsed = Date.now() - started;
  // one-at-a-time confirms with Nagle on would take ~40 ms each (20 s); in flight together they take well under that
  assert.ok(elapsed < 5000, `500 confirmed publishes took ${elapsed} ms`);
  const conn = await connect(vhost.url);
  const ch = await conn.createChannel();
  const q = await ch.checkQueue(Queues.outbound);
  assert.equal(q.messageCount, 500);
  await ch.purgeQueue(Queues.outbound);
  for (const name of [Queues.delivery, Queues.deadLetter]) await ch.checkQueue(name);
  await conn.close();
  await bus.stop();
});

test('a message no queue is bound for is reported unroutable, not accepted', async () => {
  const bus = new Bus({ url: vhost.url, logger, name: 'test' });
  bus.start();
  await bus.waitConnected();
  await assert.rejects(bus.publish({ routingKey: 'no-such-route', body: Buffer.from('x') }), UnroutableError);
  await bus.stop();
});

test('broker unreachable: publish fails fast; after it comes back the bus reconnects and consumers resume', async () => {
  const bus = new Bus({ url: viaProxy(), logger, name: 'test' });
  const got: string[] = [];
  await bus.consume(
    Queues.delivery,
    async (d) => {
      got.push(d.body.toString());
    },
    { prefetch: 10, maxAttempts: 3 },
  );
  bus.start();
  await bus.waitConnected();
  await bus.publish({ routingKey: RoutingKeys.delivery, body: Buffer.from('before') });
  await waitFor(() => got.includes('before'));
  proxy.cut();
  await waitFor(() => !bus.connected, { what: 'disconnect noticed' });
  await assert.rejects(
    bus.publish({ routingKey: RoutingKeys.delivery, body: Buffer.from('during') }),
    BusUnavailableError,
  );
  proxy.restore();
  await bus.waitConnected(15_000);
  await bus.publish({ routingKey: RoutingKeys.delivery, body: Buffer.from('after') });
  await waitFor(() => got.includes('after'), { what: 'consumer re-attached' });
  assert.ok(!got.includes('during'));
  await bus.stop();
});

/**
 * Makes the broker close the bus's first consumer channel, the connection staying: an ack
 * of a delivery it never made (PRECONDITION_FAILED), as it closes one whose message
 * outlived consumer_timeout. Resolves once the channel is closed.
 */
async function closedByBroker(bus: Bus): Promise<void> {
  const channel = (bus as unknown as { consumers: { channel?: Channel }[] }).consumers[0]!.channel!;
  const gone = new Promise<void>((resolve) => channel.once('close', () => resolve()));
  channel.ack({ fields: { deliveryTag: 999_999 } } as unknown as ConsumeMessage);
  await gone;
}

test('a consumer channel the broker closes is opened again: the instance keeps consuming', async () => {
  const bus = new Bus({ url: vhost.url, logger, name: 'test' });
  bus.start();
  await bus.waitConnected();
  const seen: string[] = [];
  await bus.consume(Queues.outbound, async (d) => void seen.push(d.body.toString()), {
    prefetch: 4,
    maxAttempts: 3,
  });
  const send = (body: string) =>
    bus.publish({
      routingKey: RoutingKeys.outbound,
      body: Buffer.from(body),
      headers: { [ENVELOPE_HEADER]: '{}' },
    });
  await send('before');
  await waitFor(() => seen.includes('before'), { what: 'the first message' });
  await closedByBroker(bus);
  await send('after');
  await waitFor(() => seen.includes('after'), { what: 'a message after the channel closed' });
  assert.equal(bus.consuming, true);
  assert.equal(bus.connected, true, 'on the same connection');
  await bus.stop();
});

test('a message whose channel closed under its run is not run again until that run ends', async () => {
  const bus = new Bus({ url: vhost.url, logger, name: 'test' });
  bus.start();
  await bus.waitConnected();
  let running = 0;
  let most = 0;
  let runs = 0;
  let open: () => void = () => undefined;
  const gate = new Promise<void>((r) => (open = r));
  await bus.consume(
    Queues.outbound,
    async () => {
      runs++;
      most = Math.max(most, ++running);
      await gate;
      running--;
    },
    { prefetch: 4, maxAttempts: 3 },
  );
  await bus.publish({
    routingKey: RoutingKeys.outbound,
    body: Buffer.from('slow'),
    headers: { [ENVELOPE_HEADER]: '{}' },
  });
  await waitFor(() => running === 1, { what: 'the run' });
  // the broker closes the channel under the run (as after consumer_timeout): the message
  // goes back to the queue while the run goes on
  await closedByBroker(bus);
  await waitFor(async () => ((await bus.inspectQueue(Queues.outbound))?.messages ?? 0) === 1 || running > 1, {
    what: 'the message back in its queue',
  });
  assert.equal(running, 1, 'not run a second time beside the first');
  open();
  // the run ended: the instance consumes again, and the message comes once more
  await waitFor(() => runs === 2 && running === 0, { what: 'the second run' });
  assert.equal(most, 1);
  await bus.stop();
});

test('a poison message goes to the dead-letter queue with its reason after N attempts', async () => {
  const bus = new Bus({ url: vhost.url, logger, name: 'test' });
  bus.start();
  await bus.waitConnected();
  let attempts = 0;
  await bus.consume(
    Queues.outbound,
    async (d) => {
      if (d.body.toString() === 'bad') {
        attempts++;
        throw new Error('disk on fire');
      }
    },
    { prefetch: 1, maxAttempts: 3, retryDelayMs: 10 },
  );
  await bus.publish({
    routingKey: RoutingKeys.outbound,
    body: Buffer.from('bad'),
    headers: { [ENVELOPE_HEADER]: '{}' },
  });
  const conn = await connect(vhost.url);
  const ch = await conn.createChannel();
  const msg = await waitFor(async () => ch.get(Queues.deadLetter, { noAck: true }), {
    what: 'dead-lettered message',
  });
  assert.equal(msg.content.toString(), 'bad');
  assert.match(String(msg.properties.headers?.[Headers.deadLetterReason]), /disk on fire/);
  // when, for `mailyard queue dead list`
  const at = Date.parse(String(msg.properties.headers?.[Headers.deadLetterTime]));
  assert.ok(Math.abs(Date.now() - at) < 60_000, `dead-lettered at ${String(at)}`);
  assert.equal(attempts, 3);
  await conn.close();
  await bus.stop();
});

test('while RabbitMQ blocks publishers, a handler that publishes is held, not spun into the dead-letter queue', async () => {
  const framed = await startTcpProxy({ host: '127.0.0.1', port: 5672 }, { amqpFrames: true });
  const bus = new Bus({
    url: `amqp://guest:guest@127.0.0.1:${framed.port}/${encodeURIComponent(vhost.name)}`,
    logger,
    name: 'test',
  });
  const feeder = new Bus({ url: vhost.url, logger, name: 'feeder' });
  bus.start();
  feeder.start();
  await Promise.all([bus.waitConnected(), feeder.waitConnected()]);
  const conn = await connect(vhost.url);
  const ch = await conn.createChannel();
  try {
    let attempts = 0;
    // as delivery does for an alias to an external address: a publish inside the handler
    await bus.consume(
      Queues.delivery,
      async (d) => {
        attempts++;
        await bus.publish({ routingKey: RoutingKeys.outbound, body: d.body });
      },
      { prefetch: 1, maxAttempts: 2, retryDelayMs: 10 },
    );
    framed.toClients(amqpFrames.blocked('low on memory'));
    await waitFor(() => bus.blocked === 'low on memory');
    await assert.rejects(
      bus.publish({ routingKey: RoutingKeys.outbound, body: Buffer.from('x') }),
      (err: Error) => err instanceof BusUnavailableError && /low on memory/.test(err.message),
    );
    await feeder.publish({ routingKey: RoutingKeys.delivery, body: Buffer.from('held') });
    await waitFor(() => attempts >= 1);
    // counted as a failure, two attempts would have dead-lettered it within milliseconds
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(attempts, 1, 'held, not retried while publishing is refused');
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0);
    framed.toClients(amqpFrames.unblocked());
    const out = await waitFor(async () => ch.get(Queues.outbound, { noAck: true }), {
      what: 'the message forwarded once publishing works again',
    });
    assert.equal(out.content.toString(), 'held');
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0);
  } finally {
    await conn.close();
    await bus.stop();
    await feeder.stop();
    await framed.close();
  }
});

test(
  'a broker that stops answering: set-up is tried again, and a stop does not wait for it',
  { timeout: 60_000 },
  async () => {
    let stall = true;
    // the handshake passes, then nothing more arrives: no answer, no heartbeat
    const framed = await startTcpProxy(
      { host: '127.0.0.1', port: 5672 },
      { amqpFrames: true, holdAfterOpen: () => stall },
    );
    const bus = new Bus({
      // heartbeats off: only the bus's own deadline can tell the connection is stuck
      url: `amqp://guest:guest@127.0.0.1:${framed.port}/${encodeURIComponent(vhost.name)}?heartbeat=0`,
      logger,
      name: 'test',
      setupTimeoutMs: 1000,
    });
    // and one that waits far longer before it gives up
    const patient = new Bus({
      url: `amqp://guest:guest@127.0.0.1:${framed.port}/${encodeURIComponent(vhost.name)}?heartbeat=0`,
      logger,
      name: 'test-patient',
      setupTimeoutMs: 600_000,
    });
    try {
      await bus.consume(Queues.delivery, async () => undefined, { prefetch: 1, maxAttempts: 2 });
      bus.start();
      await waitFor(() => framed.accepted >= 2, {
        timeoutMs: 20_000,
        what: 'a second connection after the first stalled',
      });
      assert.equal(bus.connected, false);
      stall = false;
      framed.release();
      await waitFor(() => bus.connected && bus.consuming, {
        timeoutMs: 30_000,
        what: 'connected and consuming once the broker answers',
      });
      // stopping while the broker does not answer: the consumer's cancel and the close
      // handshake are cut short
      framed.hold();
      let t = Date.now();
      await bus.stop();
      assert.ok(Date.now() - t < 25_000, `stopped after ${Date.now() - t} ms`);
      framed.release();

      // and while it sets up a connection
      stall = true;
      const before = framed.opened;
      patient.start();
      await waitFor(() => framed.opened > before, { timeoutMs: 20_000, what: 'the connection opened' });
      t = Date.now();
      await patient.stop();
      assert.ok(Date.now() - t < 15_000, `stopped after ${Date.now() - t} ms`);
    } finally {
      framed.release();
      await bus.stop();
      await patient.stop();
      await framed.close();
    }
  },
);

test(
  'a broker that stops reading after the connection is up: an RPC and an inspection end at their deadline',
  { timeout: 60_000 },
  async () => {
    const framed = await startTcpProxy({ host: '127.0.0.1', port: 5672 }, { amqpFrames: true });
    const bus = new Bus({
      url: `amqp://guest:guest@127.0.0.1:${framed.port}/${encodeURIComponent(vhost.name)}`,
      logger,
      name: 'test',
    });
    try {
      bus.start();
      await bus.waitConnected();
      // the first call opens the RPC channel: the broker's answer to that never comes
      framed.hold();
      for (let i = 0; i < 2; i++) {
        const started = Date.now();
        await assert.rejects(
          bus.call(PolicyRpc, policyRequest, { timeoutMs: 500 }),
          (err: Error) => err instanceof BusUnavailableError && /RPC channel/.test(err.message),
        );
        assert.ok(Date.now() - started < 5000, `answered after ${Date.now() - started} ms`);
      }
      await assert.rejects(
        bus.inspectQueue(Queues.delivery),
        (err: Error) => err instanceof BusUnavailableError && /did not answer/.test(err.message),
      );
    } finally {
      framed.release();
      await bus.stop();
      await framed.close();
    }
  },
);

test(
  'a handler failing for a backend outage holds the message: never dead-lettered, run again until it works',
  { timeout: 30_000 },
  async () => {
    const bus = new Bus({ url: vhost.url, logger, name: 'test' });
    bus.start();
    await bus.waitConnected();
    const conn = await connect(vhost.url);
    const ch = await conn.createChannel();
    try {
      const deadBefore = (await ch.checkQueue(Queues.deadLetter)).messageCount;
      const outage = { on: true };
      const calls: number[] = [];
      await bus.consume(
        Queues.delivery,
        async (d) => {
          calls.push(d.redeliveries);
          if (outage.on) throw new BackendUnavailableError('Redis: connection refused');
        },
        { prefetch: 1, maxAttempts: 2, retryDelayMs: 10 },
      );
      await bus.publish({ routingKey: RoutingKeys.delivery, body: Buffer.from('held-for-redis') });
      // far more runs than maxAttempts allows for ordinary failures
      await waitFor(() => calls.length >= 4, { what: 'the held message run again' });
      assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, deadBefore, 'not dead-lettered');
      assert.ok(
        calls.every((n) => n === 0),
        'held in place, not returned to the queue',
      );
      outage.on = false;
      const n = calls.length;
      await waitFor(
        async () => calls.length > n && (await ch.checkQueue(Queues.delivery)).messageCount === 0,
        {
          what: 'processed once the backend is back',
        },
      );
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(calls.length, n + 1, 'acked after the run that worked');
      assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, deadBefore);

      // a bus that stops while holding gives the message back to the queue
      outage.on = true;
      await bus.publish({ routingKey: RoutingKeys.delivery, body: Buffer.from('held-at-stop') });
      const m = calls.length;
      await waitFor(() => calls.length > m, { what: 'second message held' });
      await bus.stop();
      const back = await waitFor(async () => ch.get(Queues.delivery, { noAck: true }), {
        what: 'the held message back in its queue',
      });
      assert.equal(back.content.toString(), 'held-at-stop');
      assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, deadBefore);
    } finally {
      await conn.close();
      await bus.stop();
    }
  },
);

test('PoisonMessageError dead-letters at once', async () => {
  const bus = new Bus({ url: vhost.url, logger, name: 'test' });
  bus.start();
  await bus.waitConnected();
  let attempts = 0;
  await bus.consume(
    Queues.delivery,
    async () => {
      attempts++;
      throw new PoisonMessageError('invalid envelope: queueId');
    },
    { prefetch: 1, maxAttempts: 5 },
  );
  await bus.publish({ routingKey: RoutingKeys.delivery, body: Buffer.from('contract-breaker') });
  const conn = await connect(vhost.url);
  const ch = await conn.createChannel();
  const msg = await waitFor(async () => ch.get(Queues.deadLetter, { noAck: true }), {
    what: 'dead-lettered message',
  });
  assert.match(String(msg.properties.headers?.[Headers.deadLetterReason]), /invalid envelope/);
  assert.equal(attempts, 1);
  await conn.close();
  await bus.stop();
});

test('acks: a slow message does not hold the prefetch window, and every finished one is settled by stop()', async () => {
  const bus = new Bus({ url: vhost.url, logger, name: 'test' });
  bus.start();
  await bus.waitConnected();
  const count = 40;
  for (let i = 0; i < count; i++)
    await bus.publish({ routingKey: RoutingKeys.delivery, body: Buffer.from(`m${i}`) });
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const done = new Set<string>();
  await bus.consume(
    Queues.delivery,
    async (d) => {
      const body = d.body.toString();
      if (body === 'm0') await held;
      done.add(body);
    },
    { prefetch: 3, maxAttempts: 3 },
  );
  // with only 3 unacked allowed, the other 39 can only arrive if their acks went out
  // while m0 is still being processed
  await waitFor(() => done.size === count - 1, { what: 'the messages behind the slow one' });
  assert.ok(!done.has('m0'));
  release();
  await waitFor(() => done.size === count);
  await bus.stop();
  const conn = await connect(vhost.url);
  const ch = await conn.createChannel();
  // nothing went back to the queue when the consumer's channel closed: all were acked
  assert.equal((await ch.checkQueue(Queues.delivery)).messageCount, 0);
  await conn.close();
});

// what /readyz asks of the bus
test(
  'consuming: false until every registered consumer is attached, and while the broker is away',
  { timeout: 30_000 },
  async () => {
    const url = `amqp://guest:guest@127.0.0.1:${proxy.port}/${encodeURIComponent(vhost.name)}`;
    const bus = new Bus({ url, logger, name: 'readiness' });
    proxy.cut();
    bus.start();
    assert.equal(bus.consuming, true, 'nothing registered: nothing missing');
    await bus.consume(Queues.delivery, async () => undefined, { prefetch: 1, maxAttempts: 1 });
    assert.equal(bus.consuming, false);
    await assert.rejects(bus.consumerCount(Queues.delivery), BusUnavailableError);
    proxy.restore();
    await waitFor(() => bus.consuming, { timeoutMs: 15_000, what: 'consumer attached after connecting' });
    assert.equal(await bus.consumerCount(Queues.delivery), 1);
    assert.equal(await bus.consumerCount(Queues.policy), 0);
    proxy.cut();
    await waitFor(() => !bus.consuming, { what: 'consumer lost with the connection' });
    proxy.restore();
    await waitFor(() => bus.consuming, { timeoutMs: 15_000, what: 'consumer attached again' });
    await bus.stop();
  },
);

test(
  'a stop while the broker answers nothing ends by its deadline, or after one close timeout without one',
  { timeout: 60_000 },
  async () => {
    const silent = await startTcpProxy({ host: '127.0.0.1', port: 5672 });
    // heartbeats off: nothing but the stop's own deadline ends the connection
    const url = `amqp://guest:guest@127.0.0.1:${silent.port}/${encodeURIComponent(vhost.name)}?heartbeat=0`;
    const consuming = async (name: string, drainMs?: number) => {
      const bus = new Bus({ url, logger, name, ...(drainMs === undefined ? {} : { drainMs }) });
      for (const queue of [Queues.delivery, Queues.outbound])
        await bus.consume(queue, async () => undefined, { prefetch: 1, maxAttempts: 2 });
      bus.start();
      await waitFor(() => bus.connected && bus.consuming, { what: `${name} consuming` });
      return bus;
    };
    const timed = await consuming('test-deadline', 1000);
    const untimed = await consuming('test-no-deadline');
    try {
      silent.hold();
      // the deadline a service's stop sets: cancels and close wait for it, no longer
      let t = Date.now();
      timed.closeBy(t + 1500);
      await timed.stop();
      assert.ok(Date.now() - t < 1500 + 1000, `stopped ${Date.now() - t} ms after, deadline 1500 ms`);
      // without one: the broker gets one close timeout (5 s), not one per consumer and another to close
      t = Date.now();
      await untimed.stop();
      assert.ok(Date.now() - t < 5000 + 1500, `stopped ${Date.now() - t} ms after`);
    } finally {
      silent.release();
      await timed.stop();
      await untimed.stop();
      await silent.close();
    }
  },
);
