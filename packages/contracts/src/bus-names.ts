// Names on the bus. Renaming any of these is a migration: running services and
// messages already queued in a deployed broker use the old name.

/** Direct exchange every message is published to; the routing key picks the queue. */
export const MAIL_EXCHANGE = 'mail';
/** Topic exchange for events (`mailbox.changed`, later learn-spam/learn-ham). */
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
} as const;
export type QueueName = (typeof Queues)[keyof typeof Queues];

/** Routing keys on MAIL_EXCHANGE; each binds to the queue of the same name. */
export const RoutingKeys = {
  delivery: 'delivery',
  outbound: 'outbound',
} as const;
export type MailRoutingKey = (typeof RoutingKeys)[keyof typeof RoutingKeys];

export const EventKeys = {
  mailboxChanged: 'mailbox.changed',
  /** A user moved messages into Junk (published by retrieval, consumed by policy). */
  learnSpam: 'learn.spam',
  /** A user moved messages out of Junk. */
  learnHam: 'learn.ham',
} as const;

/** AMQP header names we set on mail messages. */
export const Headers = {
  /** Why a message was dead-lettered (last processing error). */
  deadLetterReason: 'x-mailyard-dead-letter-reason',
  /** Contract version of the envelope in this message. */
  envelopeVersion: 'x-mailyard-envelope-version',
} as const;
