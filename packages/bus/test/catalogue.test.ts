// The bus's typed API over the catalogue in @mailyard/contracts: RPC (policy), events,
// mail consumers, and the inspect API, against a real RabbitMQ vhost. Peers that speak
// raw AMQP, as the code before the catalogue did, must interoperate both ways: the wire
// format (queue, routing-key and header names) has not changed.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connect, type Channel, type ChannelModel } from 'amqplib';
import {
  ENVELOPE_HEADER,
  EVENTS_EXCHANGE,
  EventKeys,
  Headers,
  MailMessages,
  POLICY_CORRELATION_HEADER,
  POLICY_REQUEST_HEADER,
  PolicyRpc,
  Queues,
  RoutingKeys,
  delayQueue,
  outboundDelayQueue,
  type Envelope,
  type PolicyDecision,
} from '@mailyard/contracts';
import { createLogger } from '@mailyard/observability';
import { createVhost, waitFor, type TestVhost } from '@mailyard/testkit';
import { Bus, RpcReplyError, RpcTimeoutError, type BrowsedMessage } from '../src/index.js';
import { policyRequest } from './fixtures.js';

const logger = createLogger('catalogue-test', 'silent');
let vhost: TestVhost;
let conn: ChannelModel;
let ch: Channel;

before(async () => {
  vhost = await createVhost();
  conn = await connect(vhost.url);
  ch = await conn.createChannel();
});
after(async () => {
  await conn.close();
  await vhost.delete();
});

async function startBus(name: string): Promise<Bus> {
  const bus = new Bus({ url: vhost.url, logger, name });
  bus.start();
  await bus.waitConnected();
  return bus;
}

/** The next dead letter whose reason matches, read with basic.get. */
async function deadLetter(reason: RegExp) {
  return waitFor(
    async () => {
      const msg = await ch.get(Queues.deadLetter, { noAck: true });
      return msg && reason.test(String(msg.properties.headers?.[Headers.deadLetterReason])) ? msg : null;
    },
    { what: `a dead letter matching ${reason}` },
  );
}

const request = policyRequest;

const decision = (text: string): PolicyDecision => ({
  v: 1,
  action: 'reject',
  reply: { code: 550, enhanced: '5.7.1', text },
  headers: [],
  removeHeaders: [],
  junk: [],
  bulk: false,
  reasons: [],
});

test(
  'policy RPC: call and serve over the bus; a request the server cannot read gets 451 4.3.0',
  { timeout: 30_000 },
  async () => {
    const server = await startBus('server');
    const client = await startBus('client');
    try {
      const seen: string[] = [];
      await server.serve(
        PolicyRpc,
        async (req, body) => {
          seen.push(`${req.stage} ${req.recipient} ${body.length}`);
          return decision(`no mail for ${req.recipient}`);
        },
        { prefetch: 4 },
      );
      const d = await client.call(PolicyRpc, request, { timeoutMs: 10_000 });
      assert.equal(d.reply?.text, 'no mail for alice@example.test');
      const data = await client.call(
        PolicyRpc,
        { ...request, stage: 'data' },
        {
          timeoutMs: 10_000,
          body: Buffer.from('Subject: x\r\n\r\nbody\r\n'),
        },
      );
      assert.equal(data.action, 'reject');
      assert.deepEqual(seen, ['rcpt alice@example.test 0', 'data alice@example.test 20']);

      // a request in the old format, sent as the policy client did before the bus had RPC
      const reply = await rawRequest({ [POLICY_REQUEST_HEADER]: JSON.stringify(request) });
      assert.equal(reply.action, 'reject');
      // one the server cannot read is answered, not dropped or dead-lettered
      const bad = await rawRequest({ [POLICY_REQUEST_HEADER]: '{"v":1,"stage":"nonsense"}' });
      assert.deepEqual([bad.action, bad.reply?.code, bad.reply?.enhanced], ['tempfail', 451, '4.3.0']);
    } finally {
      await client.stop();
      await server.stop();
    }
  },
);

/** A policy request as raw AMQP: direct reply-to, correlation id as property and header. */
async function rawRequest(headers: Record<string, unknown>): Promise<PolicyDecision> {
  const rch = await conn.createChannel();
  try {
    let answer: PolicyDecision | null = null;
    await rch.consume(
      'amq.rabbitmq.reply-to',
      (msg) => {
        if (msg?.properties.headers?.[POLICY_CORRELATION_HEADER] === 'raw-1')
          answer = JSON.parse(msg.content.toString()) as PolicyDecision;
      },
      { noAck: true },
    );
    rch.sendToQueue(Queues.policy, Buffer.alloc(0), {
      replyTo: 'amq.rabbitmq.reply-to',
      correlationId: 'raw-1',
      persistent: false,
      expiration: '10000',
      headers: { ...headers, [POLICY_CORRELATION_HEADER]: 'raw-1' },
    });
    return await waitFor(() => answer, { what: 'the answer to a raw request' });
  } finally {
    await rch.close();
  }
}

test(
  'policy RPC: no answer is RpcTimeoutError, an answer that breaks the contract RpcReplyError',
  { timeout: 30_000 },
  async () => {
    const client = await startBus('client');
    const liar = await conn.createChannel();
    try {
      const started = Date.now();
      await assert.rejects(client.call(PolicyRpc, request, { timeoutMs: 500 }), RpcTimeoutError);
      assert.ok(Date.now() - started >= 450);
      await liar.consume(Queues.policy, (msg) => {
        if (!msg) return;
        liar.ack(msg);
        liar.sendToQueue(String(msg.properties.replyTo), Buffer.from('{"v":1,"action":"maybe"}'), {
          headers: {
            [POLICY_CORRELATION_HEADER]: msg.properties.headers?.[POLICY_CORRELATION_HEADER] as string,
          },
        });
      });
      await assert.rejects(client.call(PolicyRpc, request, { timeoutMs: 10_000 }), RpcReplyError);
    } finally {
      await liar.close();
      await client.stop();
    }
  },
);

test(
  'events: subscribers get validated payloads; an invalid one is dead-lettered, not handed over',
  { timeout: 30_000 },
  async () => {
    const bus = await startBus('events');
    try {
      const got: string[] = [];
      await bus.subscribe(EventKeys.mailboxChanged, (ev) => {
        got.push(`${ev.account} ${ev.folder}`);
      });
      await bus.subscribe('learn.*', (ev, key) => {
        got.push(`${key} ${ev.account}`);
      });
      await bus.publishEvent(EventKeys.mailboxChanged, {
        v: 1,
        account: 'a@example.test',
        folder: 'INBOX',
        queueId: null,
        at: new Date().toISOString(),
      });
      // published raw, as before the catalogue: defaults (queueId) are filled in
      ch.publish(
        EVENTS_EXCHANGE,
        EventKeys.learnHam,
        Buffer.from('{"v":1,"account":"b@example.test","message":""}'),
      );
      await waitFor(() => got.length === 2, { what: 'both events' });
      assert.deepEqual(got.sort(), ['a@example.test INBOX', 'learn.ham b@example.test']);

      ch.publish(
        EVENTS_EXCHANGE,
        EventKeys.mailboxChanged,
        Buffer.from('{"v":1,"account":"c@example.test"}'),
      );
      const dead = await deadLetter(/invalid mailbox\.changed event: folder/);
      assert.equal(dead.properties.headers?.[Headers.deadLetterQueue], 'events/mailbox.changed');
      await assert.rejects(
        // forced past the compiler: refused at the publisher
        bus.publishEvent(EventKeys.learnSpam, { v: 2 } as never),
        /invalid learn\.spam event/,
      );
      assert.equal(got.length, 2);
    } finally {
      await bus.stop();
    }
  },
);

/** Never run: the compiler refuses a payload that is not the catalogue's. */
export function wrongPayloadsDoNotCompile(bus: Bus): void {
  // @ts-expect-error a mailbox.changed event has no `message`
  void bus.publishEvent(EventKeys.mailboxChanged, { v: 1, account: 'a', message: 'x' });
  // @ts-expect-error learn events carry the message
  void bus.publishEvent(EventKeys.learnSpam, { v: 1, account: 'a' });
  // @ts-expect-error the policy request needs a stage
  void bus.call(PolicyRpc, { v: 1, origin: 'msa', sessionId: 's', client: { ip: '1' } }, { timeoutMs: 1 });
  void bus.subscribe(EventKeys.learnHam, (ev) => {
    // @ts-expect-error a learn event has no folder
    void ev.folder;
  });
}

const envelope = (queueId: string): Envelope => ({
  v: 1,
  queueId,
  mailFrom: 'a@example.test',
  recipients: ['b@remote.test'],
  client: { ip: '192.0.2.1', hostname: null, helo: 'x', tls: null, user: null },
  receivedAt: new Date().toISOString(),
  attempts: 1,
  body: '7BIT',
  smtputf8: false,
  lastError: '451 4.3.0 try later',
});

test(
  'inspect: depth, browse keeps or settles, republish; a lost delay queue is declared again',
  { timeout: 30_000 },
  async () => {
    const bus = await startBus('inspect');
    try {
      assert.equal(await bus.inspectQueue('no-such-queue'), null);
      const delay = 3_600_000;
      const queue = outboundDelayQueue(delay);
      await ch.deleteQueue(queue);
      // the relay defers a message after its queue was lost: declared again, not refused
      await bus.publishDelayed(delay, Buffer.from('Subject: one\r\n\r\n'), envelope('QueueIdOne000001'));
      await bus.publishDelayed(delay, Buffer.from('Subject: two\r\n\r\n'), envelope('QueueIdTwo000002'));
      assert.deepEqual(await bus.inspectQueue(queue), { messages: 2, consumers: 0 });

      const seen: string[] = [];
      const take = async (m: BrowsedMessage) => {
        const env = JSON.parse(String(m.headers[ENVELOPE_HEADER])) as Envelope;
        seen.push(env.queueId);
        assert.equal(m.headers[Headers.envelopeVersion], 1);
        if (env.queueId !== 'QueueIdTwo000002') return 'keep' as const;
        await bus.republish(m, RoutingKeys.outbound);
        return 'ack' as const;
      };
      // browsed and kept twice first, as by two `queue list`: the quorum queue counts
      // those deliveries on the message, which its copy in outbound must not carry
      for (let i = 0; i < 2; i++) await bus.browse(queue, async () => 'keep' as const);
      assert.equal(await bus.browse(queue, take), true);
      assert.deepEqual(seen, ['QueueIdOne000001', 'QueueIdTwo000002']);
      // the kept one is still there, in its place; the other went to outbound
      assert.deepEqual(await bus.inspectQueue(queue), { messages: 1, consumers: 0 });
      assert.equal((await bus.inspectQueue(Queues.outbound))?.messages, 1);
      assert.equal(await bus.browse('no-such-queue', take), false);

      // the republished message is consumed like any other, its envelope checked by the bus
      const got: [string, number][] = [];
      await bus.consumeMail(
        MailMessages.outbound,
        async (env, d) => void got.push([env.queueId, d.redeliveries]),
        {
          prefetch: 1,
        },
      );
      await waitFor(() => got.length === 1, { what: 'the retried message consumed' });
      assert.deepEqual(got, [['QueueIdTwo000002', 0]], 'a first delivery, not a redelivery');
      assert.equal(await bus.consumerCount(Queues.outbound), 1);
    } finally {
      await ch.purgeQueue(outboundDelayQueue(3_600_000)).catch(() => undefined);
      await bus.stop();
    }
  },
);

test(
  'a delay queue in front of delivery: the message goes back to delivery once its delay is out',
  { timeout: 30_000 },
  async () => {
    const bus = await startBus('delayed-delivery');
    const delay = 300;
    const queue = delayQueue(RoutingKeys.delivery, delay);
    try {
      assert.equal(queue, 'delivery.retry.300ms');
      await ch.purgeQueue(Queues.delivery);
      const sent = Date.now();
      await bus.publishDelayed(
        delay,
        Buffer.from('Subject: later\r\n\r\n'),
        envelope('QueueIdLate00001'),
        RoutingKeys.delivery,
      );
      const back = await waitFor(async () => ch.get(Queues.delivery, { noAck: true }), {
        what: 'the message back in delivery',
      });
      assert.ok(Date.now() - sent >= delay, 'not before its delay');
      const env = JSON.parse(String(back.properties.headers?.[ENVELOPE_HEADER])) as Envelope;
      assert.equal(env.queueId, 'QueueIdLate00001');
      assert.equal(back.content.toString(), 'Subject: later\r\n\r\n');
      assert.deepEqual(await bus.inspectQueue(queue), { messages: 0, consumers: 0 });
      assert.equal(await bus.inspectQueue(outboundDelayQueue(delay)), null, 'no outbound queue for it');
    } finally {
      await bus.stop();
    }
  },
);

test('a browse right after another finds every message the first one kept', { timeout: 60_000 }, async () => {
  // a quorum delay queue takes kept messages back some time after the browse's channel
  // closed; `queue list` followed at once by `queue show` must still find the message
  const bus = await startBus('browse-again');
  const delay = 7_200_000;
  const queue = outboundDelayQueue(delay);
  try {
    for (let i = 0; i < 30; i++) {
      await bus.publishDelayed(
        delay,
        Buffer.from('Subject: kept\r\n\r\n'),
        envelope(`QueueIdKept${String(i).padStart(5, '0')}`),
      );
    }
    for (let round = 0; round < 15; round++) {
      let seen = 0;
      await bus.browse(queue, async () => (seen++, 'keep'));
      assert.equal(seen, 30, `browse ${round + 1} saw every message`);
    }
  } finally {
    await ch.purgeQueue(queue).catch(() => undefined);
    await bus.stop();
  }
});

test(
  'mail consumers: an envelope that breaks the contract is dead-lettered at once',
  { timeout: 30_000 },
  async () => {
    const bus = await startBus('mail');
    try {
      let runs = 0;
      await bus.consumeMail(MailMessages.delivery, async () => void runs++, { prefetch: 1 });
      await bus.publish({
        routingKey: RoutingKeys.delivery,
        body: Buffer.from('x'),
        headers: { [ENVELOPE_HEADER]: JSON.stringify({ ...envelope('QueueIdBad000003'), recipients: [] }) },
      });
      const dead = await deadLetter(/invalid envelope: recipients/);
      assert.equal(dead.properties.headers?.[Headers.deadLetterQueue], Queues.delivery);
      assert.equal(dead.properties.headers?.[Headers.deadLetterAttempts], 1);
      assert.equal(runs, 0);
    } finally {
      await bus.stop();
    }
  },
);
