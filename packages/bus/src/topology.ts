import type { Channel } from 'amqplib';
import {
  DEAD_LETTER_EXCHANGE,
  EVENTS_EXCHANGE,
  MAIL_EXCHANGE,
  Queues,
  RoutingKeys,
} from '@mailyard/contracts';

/**
 * The whole broker topology, declared in one place and asserted by every service at
 * connect (declarations are idempotent, so whichever service starts first creates it).
 *
 *   exchange `mail` (direct) --delivery--> quorum queue `delivery`
 *                            --outbound--> quorum queue `outbound`
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

export async function declareTopology(ch: Channel): Promise<void> {
  for (const ex of EXCHANGES) await ch.assertExchange(ex.name, ex.type, { durable: true });
  for (const q of QUEUES) {
    await ch.assertQueue(q.name, { durable: true, arguments: q.arguments });
    for (const b of q.bindings) await ch.bindQueue(q.name, b.exchange, b.key);
  }
}
