import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, before, test } from 'node:test';
import { readFileSync } from 'node:fs';
import { queueDepth, startTcpProxy, waitFor } from '@mailyard/testkit';
import { addAccount, type Platform } from '../../../test/harness.js';
import {
  envelope,
  queueOutbound,
  relayTestbed,
  simpleMessage,
  type RelayHandle,
  type RelayTestbed,
  type RemoteMta,
} from './helpers.js';
import { SENDING_CLAIM_MS } from '../src/relay.js';

let bed: RelayTestbed;
let p: Platform;
let mx: RemoteMta;
let batchMx: RemoteMta | null = null;
let child: ChildProcess | null = null;
let second: RelayHandle | null = null;
/** Lets the stalled receiver answer: before the close too, or a failed test waits on it. */
let release: () => void = () => undefined;

before(async () => {
  bed = await relayTestbed({
    withDelivery: false,
    zone: {
      'kill.test': { MX: [{ priority: 10, exchange: 'mx.kill.test' }] },
      'mx.kill.test': { A: ['127.0.0.10'] },
      'batch.kill.test': { MX: [{ priority: 10, exchange: 'mx.batch.kill.test' }] },
      'mx.batch.kill.test': { A: ['127.0.0.11'] },
      'bounce.kill.test': { MX: [{ priority: 10, exchange: 'mx.bounce.kill.test' }] },
      'mx.bounce.kill.test': { A: ['127.0.0.13'] },
    },
  });
  p = bed.p;
});

after(async () => {
  release();
  await bed?.close();
});

test(
  'an instance killed with SIGKILL mid-delivery: the message is still delivered, once',
  { timeout: 180_000 },
  async () => {
    const stalled = new Promise<void>((r) => (release = r));
    let sawData = false;
    mx = await bed.remote('127.0.0.10', {
      // first attempt: the whole message arrives, then the receiver stalls before its reply
      data: async () => {
        if (sawData) return undefined;
        sawData = true;
        await stalled;
        return { code: 451, message: '4.3.0 connection lost before the reply' };
      },
    });
    child = await bed.spawn();
    const env = envelope('sender@example.test', ['victim@kill.test']);
    await queueOutbound(
      p,
      env,
      simpleMessage('sender@example.test', 'victim@kill.test', 'killed-mid-delivery'),
    );
    await waitFor(() => sawData, { what: 'the message in flight at the receiver' });
    child.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));
    child = null;
    release();

    // the unacked message went back to `outbound`; another instance picks it up, and
    // sends it once the dead one's claim on the recipient has lapsed (SENDING_CLAIM_MS)
    second = await bed.relay({ outbound_retry_schedule: '200ms' });
    await waitFor(() => mx.received.some((m) => m.data.toString().includes('Subject: killed-mid-delivery')), {
      timeoutMs: 20_000 + SENDING_CLAIM_MS,
      what: 'delivery after the kill',
    });
    await waitFor(async () => (await queueDepth(p.vhost.name, 'outbound')) === 0);
    assert.equal(
      mx.received.filter((m) => m.data.toString().includes('Subject: killed-mid-delivery')).length,
      1,
    );
  },
);

test(
  'an instance killed while a later batch of recipients is in flight: the earlier batch gets no second copy',
  { timeout: 180_000 },
  async () => {
    await second?.stop();
    second = null;
    const stalled = new Promise<void>((r) => (release = r));
    let sawSecond = false;
    batchMx = await bed.remote('127.0.0.11', {
      // the first transaction is taken; the second (one recipient a transaction) stalls
      // before its reply, once
      data: async (msg) => {
        if (!msg.to.includes('second@batch.kill.test') || sawSecond) return undefined;
        sawSecond = true;
        await stalled;
        return { code: 451, message: '4.3.0 connection lost before the reply' };
      },
    });
    const to = ['first@batch.kill.test', 'second@batch.kill.test'];
    child = await bed.spawn({ SMTP_DESTINATION_RECIPIENT_LIMIT: '1' });
    await queueOutbound(
      p,
      envelope('sender@example.test', to),
      simpleMessage('sender@example.test', to[0]!, 'batches'),
    );
    await waitFor(() => sawSecond, { what: 'the second transaction in flight at the receiver' });
    assert.deepEqual(
      batchMx.received.map((m) => m.to),
      [['first@batch.kill.test']],
    );
    child.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));
    child = null;
    release();

    second = await bed.relay({
      outbound_retry_schedule: '200ms',
      smtp_destination_recipient_limit: 1,
    });
    const copies = (rcpt: string) => batchMx!.received.filter((m) => m.to.includes(rcpt)).length;
    await waitFor(() => copies('second@batch.kill.test') === 1, {
      timeoutMs: 20_000 + SENDING_CLAIM_MS,
      what: 'the second recipient served after the kill',
    });
    await waitFor(async () => (await queueDepth(p.vhost.name, 'outbound')) === 0);
    assert.equal(copies('first@batch.kill.test'), 1, 'the first recipient has one copy');
  },
);

test(
  'an instance killed once its bounce is queued, before it records it: the sender gets one DSN',
  { timeout: 180_000 },
  async (t) => {
    await second?.stop();
    second = null;
    await p.startDelivery();
    await addAccount(p.directory, 'owner@local.kill.test');
    // between the instance and RabbitMQ, to keep the DSN's confirm from it
    const broker = await startTcpProxy({ host: '127.0.0.1', port: 5672 });
    t.after(() => broker.close());
    const amqp = new URL(p.vhost.url);
    amqp.port = String(broker.port);
    let refused = 0;
    await bed.remote('127.0.0.13', {
      rcpt: () => {
        // the first refusal: what the broker says from now on stays with the proxy
        if (++refused === 1) broker.hold();
        return { code: 550, message: '5.1.1 No such user' };
      },
    });
    child = await bed.spawn({ AMQP_URL: amqp.toString() });
    await queueOutbound(
      p,
      envelope('owner@local.kill.test', ['nobody@bounce.kill.test']),
      simpleMessage('owner@local.kill.test', 'nobody@bounce.kill.test', 'bounced-then-killed'),
    );
    const dsns = () => p.inbox('owner@local.kill.test');
    // the broker took the DSN (delivery filed it); the instance never heard it confirmed
    await waitFor(() => dsns().length === 1, { timeoutMs: 30_000, what: 'the DSN filed' });
    child.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));
    child = null;
    broker.release();

    // the unacked message goes back to `outbound`: another instance is refused again
    second = await bed.relay({ outbound_retry_schedule: '200ms' });
    await waitFor(() => refused === 2, { timeoutMs: 30_000, what: 'the second attempt refused' });
    await waitFor(async () => (await queueDepth(p.vhost.name, 'outbound')) === 0, { what: 'acked' });
    await waitFor(async () => (await queueDepth(p.vhost.name, 'delivery')) === 0, { what: 'DSNs run' });
    assert.equal(dsns().length, 1, 'one DSN');
    assert.match(readFileSync(dsns()[0]!, 'utf8'), /^Final-Recipient: rfc822; nobody@bounce\.kill\.test\r$/m);
  },
);
