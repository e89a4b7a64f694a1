// Deferred mail and dead letters as the bus leaves them, for the console's tests. Dead letters: published to `mail.dlx`
// with the message's own headers and the bus's record of why, from which queue, after how
// many runs and when (as test/dead-letters.test.ts does for the CLI).
import type { Redis } from 'ioredis';
import { Bus, DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS, outboundDelayQueueSpec } from '@mailyard/bus';
import { DeferredIndex } from '@mailyard/queue-admin';
import { DEAD_LETTER_EXCHANGE, ENVELOPE_HEADER, Headers, type Envelope } from '@mailyard/contracts';
import { createLogger } from '@mailyard/observability';
import { envelope } from '../../delivery/test/envelope.js';

/** A bus of the test's own on the platform's vhost, connected; stop it after. */
export async function testBus(url: string): Promise<Bus> {
  const bus = new Bus({ url, logger: createLogger('test', 'silent'), name: 'test' });
  bus.start();
  await bus.waitConnected(10_000);
  return bus;
}

/** The queue ids of the mail messages in `queue` now, each left in place. */
export async function queueIdsIn(bus: Bus, queue: string): Promise<string[]> {
  const ids: string[] = [];
  await bus.browse(queue, async (m) => {
    ids.push((JSON.parse(String(m.headers[ENVELOPE_HEADER])) as Envelope).queueId);
    return 'keep';
  });
  return ids;
}

// the longest retry delay: a message deferred into it stays there for the test
const DEFER_DELAY = DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS.at(-1)!;
/** The delay queue deferredMail puts its messages in. */
export const DEFERRED_QUEUE = outboundDelayQueueSpec(DEFER_DELAY).name;

/** A message deferred as outbound-relay defers one: into a delay queue, and indexed. */
export async function deferredMail(bus: Bus, redis: Redis, queueId: string): Promise<void> {
  const body = Buffer.from(`From: <ann@example.test>\r\nSubject: waiting ${queueId}\r\n\r\nHello\r\n`);
  await bus.publishDelayed(DEFER_DELAY, body, {
    v: 1,
    queueId,
    mailFrom: 'ann@example.test',
    recipients: ['full@later.test'],
    client: { ip: '127.0.0.1', hostname: 'localhost', helo: 'localhost', tls: null, user: null },
    receivedAt: new Date().toISOString(),
    attempts: 1,
    body: '7BIT',
    smtputf8: false,
    lastError: '452 4.2.2 Mailbox full',
  });
  await new DeferredIndex(redis).add({
    queueId,
    mailFrom: 'ann@example.test',
    recipients: ['full@later.test'],
    attempts: 1,
    lastError: '452 4.2.2 Mailbox full',
    receivedAt: new Date().toISOString(),
    nextTry: new Date(Date.now() + DEFER_DELAY).toISOString(),
    queue: DEFERRED_QUEUE,
    size: body.length,
  });
}

/** A mail message the consumer of `queue` gave up on after `attempts` runs (confirmed). */
export function deadMail(
  bus: Bus,
  letter: { queueId: string; queue: string; reason: string; recipients: string[]; attempts?: number },
): Promise<void> {
  const body = Buffer.from(
    `From: sender@remote.test\r\nTo: ${letter.recipients.join(', ')}\r\nSubject: dead letter ${letter.queueId}\r\n\r\nHello\r\n`,
  );
  return publishDead(bus, body, letter, envelope(letter.recipients, letter.queueId));
}

/** A message without an envelope (an event, a policy request) given up on in `queue`. */
export function deadMessage(
  bus: Bus,
  body: string,
  letter: { queue: string; reason: string },
): Promise<void> {
  return publishDead(bus, Buffer.from(body), letter);
}

function publishDead(
  bus: Bus,
  body: Buffer,
  letter: { queue: string; reason: string; attempts?: number },
  env?: Envelope,
): Promise<void> {
  return bus.publish({
    exchange: DEAD_LETTER_EXCHANGE,
    routingKey: '',
    body,
    headers: {
      ...(env ? { [ENVELOPE_HEADER]: JSON.stringify(env), [Headers.envelopeVersion]: env.v } : {}),
      [Headers.deadLetterReason]: letter.reason,
      [Headers.deadLetterQueue]: letter.queue,
      [Headers.deadLetterAttempts]: letter.attempts ?? 1,
      [Headers.deadLetterTime]: new Date().toISOString(),
    },
  });
}
