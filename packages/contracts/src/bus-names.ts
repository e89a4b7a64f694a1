// Names on the bus. Renaming any of these is a migration: running services and
// messages already queued in a deployed broker use the old name.

/** Direct exchange every message is published to; the routing key picks the queue. */
export const MAIL_EXCHANGE = 'mail';
/** Topic exchange for events (`mailbox.changed`, `learn.spam`, `learn.ham`). */
export const EVENTS_EXCHANGE = 'events';
/** Exchange that messages which could not be processed are dead-lettered to. */
export const DEAD_LETTER_EXCHANGE = 'mail.dlx';

export const Queues = {
  /** Local recipients, consumed by services/delivery. */
  delivery: 'delivery',
  /** Remote recipients (relay, external alias targets), consumed by services/outbound-relay. */
  outbound: 'outbound',
  /** Poison messages: failed processing N times, or failed contract validation. */
  deadLetter: 'dead-letter',
  /** Policy RPC requests (stage decisions), consumed by services/policy; replies use direct reply-to. */
  policy: 'policy',
} as const;
export type QueueName = (typeof Queues)[keyof typeof Queues];

/** Routing keys on MAIL_EXCHANGE; each binds to the queue of the same name. */
export const RoutingKeys = {
  delivery: 'delivery',
  outbound: 'outbound',
} as const;
export type MailRoutingKey = (typeof RoutingKeys)[keyof typeof RoutingKeys];

/** Routing keys on EVENTS_EXCHANGE; the payload of each is in the catalogue (`Events`). */
export const EventKeys = {
  /** A message was filed into a folder or a folder changed (payload: MailboxChanged). */
  mailboxChanged: 'mailbox.changed',
  /** A user filed a message into Junk: train the spam filter (payload: LearnEvent). */
  learnSpam: 'learn.spam',
  /** A user moved a message out of Junk: train as ham (payload: LearnEvent). */
  learnHam: 'learn.ham',
} as const;
export type EventKey = (typeof EventKeys)[keyof typeof EventKeys];

/**
 * What `x-mailyard-original-queue` says of a dead-lettered event, which came from no queue
 * of ours (each subscriber reads a private one): `events/<routing key>`.
 */
export const DEAD_LETTERED_EVENT_PREFIX = 'events/';

/** AMQP header names we set on messages. */
export const Headers = {
  /** Why a message was dead-lettered (last processing error). */
  deadLetterReason: 'x-mailyard-dead-letter-reason',
  /** The queue (or `events/<key>` for an event) a dead-lettered message was taken from. */
  deadLetterQueue: 'x-mailyard-original-queue',
  /** How many times it was run before it was dead-lettered. */
  deadLetterAttempts: 'x-mailyard-attempts',
  /** When it was dead-lettered (ISO 8601); dead letters of earlier releases lack it. */
  deadLetterTime: 'x-mailyard-dead-lettered-at',
  /** Contract version of the envelope in this message. */
  envelopeVersion: 'x-mailyard-envelope-version',
  /** Matches an RPC reply to its request (set on both; the Bus sets its own message ids). */
  correlationId: 'x-mailyard-correlation-id',
} as const;

/**
 * Delay queues of outbound retries: one queue per delay, named after it
 * (`outbound.retry.5m`), bound to MAIL_EXCHANGE under its own name. A message waits
 * there for the queue's TTL and is dead-lettered back to `outbound`.
 */
export const OUTBOUND_DELAY_QUEUE_PREFIX = 'outbound.retry.';

/**
 * Delay queues of delivery's retries (a recipient whose alias is over
 * ALIAS_EXPANSION_LIMIT, a mailbox it cannot write to): `delivery.retry.5m`, as the
 * outbound ones, dead-lettered back to `delivery`.
 */
export const DELIVERY_DELAY_QUEUE_PREFIX = 'delivery.retry.';

/**
 * The classic delay queues of earlier releases (`outbound.delay.5m`). What waits in them
 * still goes back to `outbound` when due; outbound-relay removes each once it is empty,
 * and the queue commands still find the messages they hold.
 */
export const LEGACY_OUTBOUND_DELAY_QUEUE_PREFIX = 'outbound.delay.';

/** The prefix of the delay queues in front of each mail queue. */
const DELAY_QUEUE_PREFIXES: Record<MailRoutingKey, string> = {
  outbound: OUTBOUND_DELAY_QUEUE_PREFIX,
  delivery: DELIVERY_DELAY_QUEUE_PREFIX,
};

/**
 * The delay queue of `delayMs` in front of the mail queue `target`, named after the delay:
 * `outbound.retry.200ms`, `outbound.retry.90s`, `delivery.retry.5m`, `outbound.retry.4h`.
 */
export function delayQueue(target: MailRoutingKey, delayMs: number): string {
  const units: [number, string][] = [
    [3_600_000, 'h'],
    [60_000, 'm'],
    [1000, 's'],
  ];
  const prefix = DELAY_QUEUE_PREFIXES[target];
  for (const [size, unit] of units) {
    if (delayMs >= size && delayMs % size === 0) return `${prefix}${delayMs / size}${unit}`;
  }
  return `${prefix}${delayMs}ms`;
}

/** `outbound.retry.200ms`, `outbound.retry.90s`, `outbound.retry.5m`, `outbound.retry.4h`. */
export function outboundDelayQueue(delayMs: number): string {
  return delayQueue(RoutingKeys.outbound, delayMs);
}

/** The mail queue a delay queue (`delivery.retry.5m`) sends its messages back to; null for another queue. */
export function delayQueueTarget(queue: string): MailRoutingKey | null {
  const found = Object.entries(DELAY_QUEUE_PREFIXES).find(([, prefix]) => queue.startsWith(prefix));
  return found ? (found[0] as MailRoutingKey) : null;
}

/** The classic queue of an earlier release for the same delay as `queue`: `outbound.delay.5m`. */
export function legacyOutboundDelayQueue(queue: string): string {
  return LEGACY_OUTBOUND_DELAY_QUEUE_PREFIX + queue.slice(OUTBOUND_DELAY_QUEUE_PREFIX.length);
}
