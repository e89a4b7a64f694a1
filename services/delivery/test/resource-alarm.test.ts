// RabbitMQ under a memory alarm, on a node of the test's own: it tells a connection of the
// alarm only once that connection publishes, and holds that first publish unread until the
// alarm ends, when it is queued. Delivery's publishes (a forward, a DSN, a retry) are made
// for a message it holds meanwhile: each must be queued once, not given up on after the
// confirm timeout and published again when the message runs again.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, type Channel, type ChannelModel } from 'amqplib';
import { Queues, RoutingKeys } from '@mailyard/contracts';
import { startPrivateRabbit, waitFor, type PrivateRabbit } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { envelope } from './envelope.js';

/** The bus's confirm timeout (publishTimeoutMs), past which a publish used to be given up on. */
const CONFIRM_TIMEOUT_MS = 15_000;

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

const alarm = (on: boolean) => rabbit.ctl('set_vm_memory_high_watermark', on ? '0.000001' : '0.4');

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
  await p?.close();
  await rabbit?.close();
});

test(
  'a forward made as a memory alarm goes off is queued once, when the alarm ends',
  { timeout: 90_000 },
  async () => {
    await p.inboundRt.bus.publishMail(
      RoutingKeys.delivery,
      Buffer.from('Subject: team news\r\n\r\nhi\r\n'),
      envelope(['team@example.test']),
    );
    await alarm(true);
    await p.startDelivery();
    const bus = p.deliveryRt!.bus;
    // ida's copy filed; the forward to far@remote.test sent, and the connection blocked
    await waitFor(() => p.inbox('ida@example.test').length === 1, { what: "ida's copy" });
    await waitFor(() => bus.blocked !== null, { what: 'the connection blocked' });
    // longer than a confirm may take unless the connection is blocked
    await sleep(CONFIRM_TIMEOUT_MS + 2000);
    assert.equal((await ch.checkQueue(Queues.delivery)).messageCount, 0, 'the message is held');

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
