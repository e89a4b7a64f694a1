// An alias that expands to more addresses than ALIAS_EXPANSION_LIMIT: as Postfix, its
// recipient is deferred (4.6.0) and the log says which and how many, so the operator can
// raise the limit; the message's other recipients get theirs, once, whatever the reruns.
// Run again with the limit raised, the alias's members get theirs and nobody a second one.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connect, type Channel, type ChannelModel } from 'amqplib';
import { ENVELOPE_HEADER, Headers, Queues, RoutingKeys, type Envelope } from '@mailyard/contracts';
import { createLogger } from '@mailyard/observability';
import { waitFor } from '@mailyard/testkit';
import { startPlatform, type Platform } from '../../../test/harness.js';
import { addCrowd, crowdRemote, team, teamRemote } from './crowd.js';
import { envelope } from './envelope.js';

const LIMIT = 10;

interface Line {
  level: number;
  msg: string;
  [field: string]: unknown;
}
const lines: Line[] = [];

let p: Platform;
let conn: ChannelModel;
let ch: Channel;
before(async () => {
  p = await startPlatform({
    delivery: { alias_expansion_limit: LIMIT },
    deliveryLogger: createLogger('delivery', 'info', {
      write: (line: string) => void lines.push(JSON.parse(line) as Line),
    }),
  });
  await addCrowd(p.directory);
  conn = await connect(p.vhost.url);
  ch = await conn.createChannel();
});
after(async () => {
  await conn?.close();
  await p?.close();
});

const body = Buffer.from(
  'From: sender@remote.test\r\nTo: crowd@example.test\r\nSubject: all\r\n\r\nHello\r\n',
);

/** Takes every message in `outbound` now: the recipients of each. */
async function takeOutbound(): Promise<string[][]> {
  const out: string[][] = [];
  for (let m; (m = await ch.get(Queues.outbound, { noAck: true }));)
    out.push((JSON.parse(String(m.properties.headers?.[ENVELOPE_HEADER])) as Envelope).recipients);
  return out;
}

/** Each local recipient's INBOX holds exactly one copy. */
function assertOneCopyEach(): void {
  for (const a of ['dora@example.test', ...team]) assert.equal(p.inbox(a).length, 1, a);
}

let deferredEnv: Envelope;

test(
  'over the limit: the recipient is deferred and logged; one at the limit and a colleague get theirs once',
  { timeout: 60_000 },
  async () => {
    const env = envelope(['crowd@example.test', 'dora@example.test', 'team@example.test']);
    await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
    // run again after a pause, each run skipping what is done, until the attempts are used up
    const dead = await waitFor(async () => ch.get(Queues.deadLetter, { noAck: true }), {
      timeoutMs: 45_000,
      what: 'the message dead-lettered after its runs',
    });
    const reason = String(dead.properties.headers?.[Headers.deadLetterReason]);
    assert.match(reason, /4\.6\.0 Alias expansion error/);
    assert.match(reason, /crowd@example\.test reached 14 addresses, over the limit of 10/);
    deferredEnv = JSON.parse(String(dead.properties.headers?.[ENVELOPE_HEADER])) as Envelope;
    assert.equal(deferredEnv.queueId, env.queueId);

    const warned = lines.filter((l) => l.rcpt === 'crowd@example.test' && l.status === '4.6.0');
    assert.ok(warned.length >= 1, 'the deferral logged');
    assert.equal(
      warned[0]!.msg,
      'unreasonable alias expansion size for crowd@example.test: 14 addresses, ALIAS_EXPANSION_LIMIT is 10 -- deferring delivery',
    );
    assert.equal(warned[0]!.queueId, env.queueId);
    assert.equal(warned[0]!.reached, 14);
    assert.equal(warned[0]!.limit, LIMIT);
    assert.ok(
      !lines.some((l) => l.rcpt === 'team@example.test' && l.status === '4.6.0'),
      'the alias at the limit is not deferred',
    );

    assertOneCopyEach();
    assert.deepEqual(await takeOutbound(), [teamRemote], "the team's external members queued once");
    const res = await fetch(`http://127.0.0.1:${p.deliveryRt!.httpPort}/metrics`);
    assert.match(
      await res.text(),
      new RegExp(`mailyard_delivery_deliveries_total\\{result="alias-expansion"\\} ${warned.length}`),
    );
  },
);

test(
  'with the limit raised, the message run again reaches the rest of the alias, nobody twice',
  { timeout: 60_000 },
  async () => {
    assert.ok(deferredEnv, 'the message of the test before');
    const deferrals = lines.filter((l) => l.status === '4.6.0').length;
    await p.stopDelivery();
    await p.startDelivery({ alias_expansion_limit: 20 });
    // as an operator moves it back from the dead-letter queue
    const from = lines.length;
    await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, deferredEnv);
    // the run's last step (the team's are found queued before, and skipped)
    await waitFor(
      () =>
        lines.slice(from).some((l) => l.queueId === deferredEnv.queueId && l.msg === 'forwarded to outbound'),
      { timeoutMs: 30_000, what: "the crowd's external members queued" },
    );
    assert.deepEqual(await takeOutbound(), [crowdRemote], 'only the members not queued before');
    assertOneCopyEach();
    assert.equal(lines.filter((l) => l.status === '4.6.0').length, deferrals, 'not deferred again');
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0);
  },
);
