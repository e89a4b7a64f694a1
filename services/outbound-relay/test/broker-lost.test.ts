import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Queues } from '@mailyard/contracts';
import { queueDepth, startTcpProxy, waitFor, type TcpProxy } from '@mailyard/testkit';
import type { Platform } from '../../../test/harness.js';
import {
  counterValue,
  envelope,
  queueOutbound,
  relayTestbed,
  simpleMessage,
  type RelayHandle,
  type RelayTestbed,
  type RemoteMta,
} from './helpers.js';

// An instance whose connection to RabbitMQ is lost while it talks to a remote server (a
// network blip, a missed heartbeat) keeps going: the server may still take the message.
// The broker meanwhile gives the message to another instance, which must not send the
// recipients a second copy while the first one may still deliver them.
let bed: RelayTestbed;
let p: Platform;
let mx: RemoteMta;
let broker: TcpProxy;
let second: RelayHandle | null = null;
/** Lets the stalled receiver answer: before the close too, or a failed test waits on it. */
let release: () => void = () => undefined;

before(async () => {
  bed = await relayTestbed({
    withDelivery: false,
    zone: {
      'lost.test': { MX: [{ priority: 10, exchange: 'mx.lost.test' }] },
      'mx.lost.test': { A: ['127.0.0.14'] },
    },
  });
  p = bed.p;
  broker = await startTcpProxy({ host: '127.0.0.1', port: 5672 });
});

after(async () => {
  release();
  await bed?.close();
  await broker?.close();
});

test(
  'an instance that lost the broker mid-delivery: the instance given the message again sends no second copy',
  { timeout: 120_000 },
  async () => {
    const stalled = new Promise<void>((r) => (release = r));
    let inFlight = false;
    mx = await bed.remote('127.0.0.14', {
      // the first copy arrives whole, and the server takes its time to say 250
      data: async () => {
        if (inFlight) return undefined;
        inFlight = true;
        await stalled;
        return undefined;
      },
    });
    const settings = { outbound_retry_schedule: '200ms' };
    const through = new URL(p.vhost.url);
    through.port = String(broker.port);
    await bed.relay({ ...settings, amqp_url: through.toString() });
    await queueOutbound(
      p,
      envelope('sender@example.test', ['rcpt@lost.test']),
      simpleMessage('sender@example.test', 'rcpt@lost.test', 'broker-lost'),
    );
    await waitFor(() => inFlight, { what: 'the message at the remote server' });
    // the first instance loses the broker, which gives its unacked message back
    second = await bed.relay(settings);
    broker.cut();
    await waitFor(async () => (await queueDepth(p.vhost.name, Queues.outbound)) === 0, {
      what: 'the message taken by the second instance',
    });
    // the second instance has come to a verdict on the recipient while the first one's
    // transaction is still open
    await waitFor(
      async () => (await counterValue(second!.rt, 'mailyard_outbound_relay_attempts_total')) > 0,
      {
        what: 'the second instance through with the message once',
      },
    );
    release();
    const copies = () => mx.received.filter((m) => m.data.toString().includes('Subject: broker-lost')).length;
    await waitFor(() => copies() >= 1, { what: 'delivered' });
    await waitFor(
      async () =>
        (await queueDepth(p.vhost.name, Queues.outbound)) === 0 &&
        (await queueDepth(p.vhost.name, 'outbound.retry.200ms')) === 0,
      { timeoutMs: 60_000, what: 'nothing left to send' },
    );
    assert.equal(copies(), 1, 'one copy');
  },
);
