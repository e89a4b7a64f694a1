import type { Channel } from 'amqplib';
import {
  DEAD_LETTER_EXCHANGE,
  EVENTS_EXCHANGE,
  MAIL_EXCHANGE,
  Queues,
  RoutingKeys,
  delayQueue,
  type MailRoutingKey,
} from '@mailyard/contracts';

/**
 * The whole broker topology, declared in one place and asserted by every service at
 * connect (declarations are idempotent, so whichever service starts first creates it).
 *
 *   exchange `mail` (direct) --delivery--> quorum queue `delivery`
 *                            --outbound--> quorum queue `outbound`
 *                            --outbound.retry.<d>--> quorum queue `outbound.retry.<d>`
 *                                   (TTL <d>, then dead-lettered to `mail`/`outbound`)
 *                            --delivery.retry.<d>--> quorum queue `delivery.retry.<d>`
 *                                   (TTL <d>, then dead-lettered to `mail`/`delivery`;
 *                                   declared by delivery at start, see delayQueueSpec)
 *   exchange `mail.dlx` (fanout) --------> quorum queue `dead-letter`
 *   default exchange --policy--> classic queue `policy` (RPC, replies by direct reply-to)
 *   exchange `events` (topic): `mailbox.changed`; subscribers bind their own
 *                              exclusive queues.
 *
 * Quorum queues are replicated and durable (fsync before confirm). Each carries a
 * delivery limit as the last line of defence against a message that crashes its
 * consumer: the consumer itself dead-letters earlier, with the reason attached.
 */
export const QUEUE_DELIVERY_LIMIT = 50;

export interface QueueSpec {
  name: string;
  bindings: { exchange: string; key: string }[];
  arguments: Record<string, unknown>;
}

const quorum = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  'x-queue-type': 'quorum',
  ...extra,
});

export const EXCHANGES: { name: string; type: 'direct' | 'topic' | 'fanout' }[] = [
  { name: MAIL_EXCHANGE, type: 'direct' },
  { name: EVENTS_EXCHANGE, type: 'topic' },
  { name: DEAD_LETTER_EXCHANGE, type: 'fanout' },
];

export const QUEUES: QueueSpec[] = [
  {
    name: Queues.delivery,
    bindings: [{ exchange: MAIL_EXCHANGE, key: RoutingKeys.delivery }],
    arguments: quorum({
      'x-dead-letter-exchange': DEAD_LETTER_EXCHANGE,
      'x-delivery-limit': QUEUE_DELIVERY_LIMIT,
    }),
  },
  {
    name: Queues.outbound,
    bindings: [{ exchange: MAIL_EXCHANGE, key: RoutingKeys.outbound }],
    arguments: quorum({
      'x-dead-letter-exchange': DEAD_LETTER_EXCHANGE,
      'x-delivery-limit': QUEUE_DELIVERY_LIMIT,
    }),
  },
  {
    // Policy RPC: requests are transient (non-persistent, short TTL: an answer
    // nobody waits for any more is useless), so a classic queue, not a quorum one.
    name: Queues.policy,
    bindings: [],
    arguments: { 'x-queue-type': 'classic', 'x-message-ttl': 30_000 },
  },
  {
    name: Queues.deadLetter,
    bindings: [{ exchange: DEAD_LETTER_EXCHANGE, key: '' }],
    arguments: quorum(),
  },
];

/**
 * Retry delays (Postfix-like back-off: 1m, 5m, 15m, 30m, 1h, 2h, 4h, then every 4h), of
 * outbound-relay and of delivery alike. Either may be configured with another schedule;
 * each declares the queues of its schedule with `delayQueueSpec` at start.
 */
export const DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS = [
  60_000, 300_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000,
];

/**
 * A delay queue in front of the mail queue `target`: messages wait for the queue's TTL,
 * then are dead-lettered back to `target`. A quorum queue with at-least-once
 * dead-lettering: it keeps a message until `target` has confirmed it. A classic queue
 * dead-letters without confirms, and drops what it cannot hand over: a broker that was
 * down while messages fell due lost every one of them at its restart.
 * (At-least-once needs `reject-publish` as overflow; the queues have no length limit.)
 *
 * A message that the queue inspection tool takes with basic.get and returns keeps its
 * expiry. No delivery limit is set: on RabbitMQ 3.x there is then none; 4.x's default of
 * 20 returns would send a message to `target` early, never lose it.
 */
export function delayQueueSpec(target: MailRoutingKey, delayMs: number): QueueSpec {
  const name = delayQueue(target, delayMs);
  return {
    name,
    bindings: [{ exchange: MAIL_EXCHANGE, key: name }],
    arguments: quorum({
      'x-message-ttl': delayMs,
      'x-dead-letter-exchange': MAIL_EXCHANGE,
      'x-dead-letter-routing-key': target,
      'x-dead-letter-strategy': 'at-least-once',
      'x-overflow': 'reject-publish',
    }),
  };
}

/** The delay queue `outbound.retry.<d>` (delayQueueSpec). */
export function outboundDelayQueueSpec(delayMs: number): QueueSpec {
  return delayQueueSpec(RoutingKeys.outbound, delayMs);
}

QUEUES.push(...DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS.map(outboundDelayQueueSpec));

export async function declareQueue(ch: Channel, q: QueueSpec): Promise<void> {
  await ch.assertQueue(q.name, { durable: true, arguments: q.arguments });
  for (const b of q.bindings) await ch.bindQueue(q.name, b.exchange, b.key);
}

export async function declareTopology(ch: Channel): Promise<void> {
  for (const ex of EXCHANGES) await ch.assertExchange(ex.name, ex.type, { durable: true });
  for (const q of QUEUES) await declareQueue(ch, q);
}
