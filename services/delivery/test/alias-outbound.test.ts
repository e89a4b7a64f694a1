// An alias whose remote members do not fit in one envelope: delivery passes them to
// outbound in several messages, each within the room a message's headers have, and a
// rerun never queues a member twice.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connect, type Channel, type ChannelModel } from 'amqplib';
import { MAX_ENVELOPE_RECIPIENT_BYTES, envelopeAddressBytes } from '@mailyard/bus';
import { ENVELOPE_HEADER, Queues, RoutingKeys, type Envelope } from '@mailyard/contracts';
import { refuseAfterOne, waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { remoteMembers } from './addresses.js';
import { envelope } from './envelope.js';

let p: Platform;
let conn: ChannelModel;
let ch: Channel;
before(async () => {
  // 2,001 addresses each, over the default ALIAS_EXPANSION_LIMIT of 1,000
  p = await startPlatform({ delivery: { alias_expansion_limit: 5000 } });
  await addAccount(p.directory, 'ann@example.test');
  conn = await connect(p.vhost.url);
  ch = await conn.createChannel();
});
after(async () => {
  await conn?.close();
  await p?.close();
});

/** The delivery's count of a metric (summed over its labels). */
async function metric(name: string): Promise<number> {
  const m = await p.deliveryRt!.registry.getSingleMetric(name)?.get();
  return m?.values.reduce((sum, v) => sum + v.value, 0) ?? 0;
}

/** Takes every message in `outbound` now: the envelope of each. */
async function takeOutbound(): Promise<Envelope[]> {
  const out: Envelope[] = [];
  for (let m; (m = await ch.get(Queues.outbound, { noAck: true }));)
    out.push(JSON.parse(String(m.properties.headers?.[ENVELOPE_HEADER])) as Envelope);
  return out;
}

/** Every part within the room, under the original queue id, and each member in one part only. */
function assertParts(parts: Envelope[], queueId: string, expected: string[]): void {
  const all = parts.flatMap((e) => e.recipients);
  assert.equal(all.length, new Set(all).size, 'no member queued twice');
  assert.deepEqual([...all].sort(), [...expected].sort());
  for (const e of parts) {
    assert.equal(e.queueId, queueId);
    assert.equal(e.mailFrom, 'sender@remote.test');
    const bytes = e.recipients.reduce((sum, r) => sum + envelopeAddressBytes(r), 0);
    assert.ok(bytes <= MAX_ENVELOPE_RECIPIENT_BYTES, `part of ${bytes} bytes`);
  }
}

const body = Buffer.from(
  'From: sender@remote.test\r\nTo: all@example.test\r\nSubject: news\r\n\r\nHello all\r\n',
);

test(
  'an alias of 2000 remote members: every member is queued to outbound, in parts that fit',
  { timeout: 60_000 },
  async () => {
    const remote = remoteMembers('m', 2000);
    assert.equal(remote[0]!.length, 40);
    // nested: the local member and half the remote ones through a second alias
    await p.directory.addAlias('half@example.test', remote.slice(1000));
    await p.directory.addAlias('all@example.test', [
      'ann@example.test',
      'half@example.test',
      ...remote.slice(0, 1000),
    ]);
    const env = envelope(['all@example.test']);
    await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
    await waitFor(() => p.inbox('ann@example.test').length === 1, { what: 'the local member’s copy' });
    // the message is done with: forwarded, or failed until it was dead-lettered
    await waitFor(
      async () =>
        (await metric('mailyard_delivery_forwarded_total')) === 1 ||
        (await ch.checkQueue(Queues.deadLetter)).messageCount > 0,
      { timeoutMs: 30_000, what: 'the remote members forwarded or the message dead-lettered' },
    );
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0, 'not dead-lettered');
    const parts = await takeOutbound();
    assert.ok(parts.length >= 2, `${parts.length} parts`);
    assertParts(parts, env.queueId, remote);
  },
);

test(
  'a part that cannot be queued: the rerun queues the rest, never a part queued before',
  { timeout: 60_000 },
  async () => {
    const remote = remoteMembers('r', 2000);
    await p.directory.addAlias('list@example.test', ['ann@example.test', ...remote]);
    // outbound takes one message, and refuses (nacks) the next while that one is there
    const lift = await refuseAfterOne(p.vhost.name, Queues.outbound);
    try {
      const failures = await metric('mailyard_delivery_failures_total');
      const forwarded = await metric('mailyard_delivery_forwarded_total');
      const env = envelope(['list@example.test']);
      await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
      await waitFor(async () => (await metric('mailyard_delivery_failures_total')) > failures, {
        timeoutMs: 20_000,
        what: 'the second part refused',
      });
      const first = await takeOutbound();
      assert.equal(first.length, 1);
      // the runs after the failure queue the second part only, once there is room (or, if
      // each queued the first one again, fail until the message is dead-lettered)
      await waitFor(
        async () =>
          (await metric('mailyard_delivery_forwarded_total')) > forwarded ||
          (await ch.checkQueue(Queues.deadLetter)).messageCount > 0,
        { timeoutMs: 30_000, what: 'the rest forwarded or the message dead-lettered' },
      );
      const rest = await takeOutbound();
      assertParts([...first, ...rest], env.queueId, remote);
      assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0, 'not dead-lettered');
      assert.equal(p.inbox('ann@example.test').length, 2, 'the local copy filed once');
    } finally {
      await lift();
    }
  },
);
