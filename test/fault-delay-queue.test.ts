import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import amqp from 'amqplib';
import { declareQueue, declareTopology, outboundDelayQueueSpec } from '@mailyard/bus';
import { MAIL_EXCHANGE, Queues } from '@mailyard/contracts';
import { startPrivateRabbit, waitFor, type PrivateRabbit } from '@mailyard/testkit';

// Deferred outbound mail waits in a delay queue until its next try. A broker that is down
// when that time comes (a crash, or a restart for an upgrade) must hand every message back
// to `outbound` once it is up again: none may be lost on the way.
const DELAY_MS = 15_000;
const COUNT = 200;
const delayQueue = outboundDelayQueueSpec(DELAY_MS);

let rabbit: PrivateRabbit;

before(async () => {
  rabbit = await startPrivateRabbit();
  const conn = await amqp.connect(rabbit.url);
  const ch = await conn.createChannel();
  await declareTopology(ch);
  await declareQueue(ch, delayQueue);
  await conn.close();
  // restarted once so the node keeps its quorum queues on disk for good (see PrivateRabbit)
  await rabbit.stop();
  await rabbit.start();
});
after(async () => {
  await rabbit?.close();
});

for (const [how, down] of [
  ['stopped', () => rabbit.stop()],
  ['SIGKILLed', () => rabbit.kill()],
] as const) {
  test(
    `a broker ${how} while deferred mail falls due hands all of it back`,
    { timeout: 180_000 },
    async () => {
      const conn = await amqp.connect(rabbit.url);
      const ch = await conn.createConfirmChannel();
      for (let i = 0; i < COUNT; i++) {
        ch.publish(MAIL_EXCHANGE, delayQueue.name, Buffer.from(`deferred ${i}`), {
          persistent: true,
          mandatory: true,
        });
      }
      await ch.waitForConfirms();
      const due = Date.now() + DELAY_MS;
      await conn.close();
      await down();
      // down until every message is past its time
      await waitFor(() => Date.now() > due + 1000, { timeoutMs: DELAY_MS + 5000, what: 'the delay to pass' });
      await rabbit.start();

      const again = await amqp.connect(rabbit.url);
      const check = await again.createChannel();
      try {
        await waitFor(async () => (await check.checkQueue(Queues.outbound)).messageCount === COUNT, {
          timeoutMs: 60_000,
          what: `${COUNT} messages back in outbound`,
        });
        assert.equal((await check.checkQueue(delayQueue.name)).messageCount, 0);
        await check.purgeQueue(Queues.outbound);
      } finally {
        await again.close();
      }
    },
  );
}
