// The policy client against a real RabbitMQ vhost: one where nothing consumes the policy
// queue, and one where the consumer stops answering. Either way a session must get
// smtpd_policy_service_default_action, and once the service is known not to answer, at once.
// The stand-in service speaks raw AMQP as the policy service did before its requests and
// replies went through the bus: the wire format must not have changed.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connect, type ChannelModel } from 'amqplib';
import { Bus } from '@mailyard/bus';
import { POLICY_CORRELATION_HEADER, POLICY_VERSION, Queues } from '@mailyard/contracts';
import { createLogger, createRegistry, type Registry } from '@mailyard/observability';
import { createVhost, waitFor, type TestVhost } from '@mailyard/testkit';
import { createPolicyClient, parseDefaultAction, type PolicyClient } from '../src/index.js';

const TIMEOUT_MS = 1000;
const OPEN_MS = 1500;
const logger = createLogger('test', 'silent');
let vhost: TestVhost;
let amqp: ChannelModel;
/** The asking process's bus (it declares the topology, the policy queue among it). */
let bus: Bus;

before(async () => {
  vhost = await createVhost();
  bus = new Bus({ url: vhost.url, logger, name: 'asker' });
  bus.start();
  await bus.waitConnected();
  amqp = await connect(vhost.url);
});
after(async () => {
  await amqp.close();
  await bus.stop();
  await vhost.delete();
});

const request = {
  stage: 'connect' as const,
  origin: 'mta-inbound' as const,
  sessionId: 'breaker-test',
  client: { ip: '192.0.2.1', hostname: null, helo: '' },
  sender: null,
  recipients: [],
  tls: false,
};

function client(): { policy: PolicyClient; registry: Registry } {
  const registry = createRegistry('breaker-test');
  const policy = createPolicyClient(
    'breaker-test',
    {
      policy_timeout: TIMEOUT_MS,
      smtpd_policy_service_default_action: parseDefaultAction('451 4.3.5 Server configuration problem')!,
      policy_breaker_threshold: 2,
      policy_breaker_open_time: OPEN_MS,
    },
    { bus, logger, registry },
  );
  policy.start();
  return { policy, registry };
}

async function ask(policy: PolicyClient) {
  const started = Date.now();
  const d = await policy.ask(request);
  return { d, ms: Date.now() - started };
}

async function metric(registry: Registry, name: string, labels: Record<string, string> = {}) {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  return m?.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value;
}

/** A policy service stand-in on the policy queue: answers `continue` while `answering`. */
async function fakePolicyService() {
  const ch = await amqp.createChannel();
  const state = { answering: true, close: () => ch.close() };
  await ch.consume(
    Queues.policy,
    (msg) => {
      if (!msg) return;
      ch.ack(msg);
      if (!state.answering) return;
      ch.sendToQueue(
        msg.properties.replyTo as string,
        Buffer.from(JSON.stringify({ v: POLICY_VERSION, action: 'continue' })),
        {
          headers: {
            [POLICY_CORRELATION_HEADER]: msg.properties.headers?.[POLICY_CORRELATION_HEADER] as string,
          },
        },
      );
    },
    { noAck: false },
  );
  return state;
}

const DEFAULT_ACTION = { code: 451, enhanced: '4.3.5', text: 'Server configuration problem' };

test(
  'no consumer on the policy queue: the default action, at once after two timeouts',
  { timeout: 30_000 },
  async () => {
    const { policy, registry } = client();
    try {
      for (let i = 0; i < 2; i++) {
        const { d, ms } = await ask(policy);
        assert.equal(d.action, 'tempfail');
        assert.deepEqual(d.reply, DEFAULT_ACTION);
        assert.ok(ms >= TIMEOUT_MS - 50, `waited for the timeout (${ms} ms)`);
      }
      assert.equal(policy.breakerState, 'open');
      assert.equal(
        await metric(registry, 'mailyard_breaker_test_policy_breaker_state', { state: 'open' }),
        1,
      );
      const { d, ms } = await ask(policy);
      assert.deepEqual(d.reply, DEFAULT_ACTION);
      assert.ok(ms < TIMEOUT_MS / 2, `answered without asking (${ms} ms)`);
      assert.equal(await metric(registry, 'mailyard_breaker_test_policy_short_circuits_total'), 1);

      // the service comes: after the open time one request probes, and its answer closes the circuit
      const service = await fakePolicyService();
      try {
        await waitFor(async () => (await policy.ask(request)).action === 'continue', {
          timeoutMs: OPEN_MS + 5000,
          what: 'an answer from the policy service',
        });
        assert.equal(policy.breakerState, 'closed');
        assert.equal(
          await metric(registry, 'mailyard_breaker_test_policy_breaker_state', { state: 'closed' }),
          1,
        );
      } finally {
        await service.close();
      }
    } finally {
      await policy.stop();
    }
  },
);

test(
  'the policy service stops answering: the same, and back once it answers',
  { timeout: 30_000 },
  async () => {
    const service = await fakePolicyService();
    const { policy } = client();
    try {
      assert.equal((await ask(policy)).d.action, 'continue');
      service.answering = false;
      for (let i = 0; i < 2; i++) assert.deepEqual((await ask(policy)).d.reply, DEFAULT_ACTION);
      const { d, ms } = await ask(policy);
      assert.deepEqual(d.reply, DEFAULT_ACTION);
      assert.ok(ms < TIMEOUT_MS / 2, `answered without asking (${ms} ms)`);
      service.answering = true;
      await waitFor(async () => (await policy.ask(request)).action === 'continue', {
        timeoutMs: OPEN_MS + 5000,
        what: 'answers again',
      });
      assert.equal(policy.breakerState, 'closed');
    } finally {
      await policy.stop();
      await service.close();
    }
  },
);
