import type { z } from 'zod';
import { DEAD_LETTER_EXCHANGE, EventKeys, Headers, Queues, type EventKey } from './bus-names.js';
import { ENVELOPE_HEADER, Envelope } from './envelope.js';
import { MailboxChanged } from './events.js';
import { LearnEvent, POLICY_REQUEST_HEADER, PolicyDecision, PolicyRequest } from './policy.js';

/**
 * The catalogue of what travels on the bus: every mail message, RPC and event type with
 * its schema, its contract version, and what becomes of it when it cannot be processed.
 * packages/bus derives the types of its publishers and consumers from these entries and
 * validates every payload it consumes against them, so a payload of the wrong shape is a
 * compile error where it is published and a dead letter, never a crash, where it arrives.
 *
 * Versions: every payload carries `v`, and a schema accepts only the versions it knows.
 * Bump it for a change an older consumer would misread, and keep reading the previous
 * version until no message of it can be queued any more. The wire format (exchange,
 * queue, routing-key and header names) is in bus-names.ts; changing it is a migration.
 */

/** What a consumer does with a message it cannot process. */
export interface FailurePolicy {
  /**
   * Runs of a failing message before it is given up (1: never run again). The service
   * setting named in `setting`, when there is one, overrides it.
   */
  maxAttempts: number;
  setting?: string;
  /**
   * Where a message goes that fails validation or its last run, with the reason in
   * `x-mailyard-dead-letter-reason`; null when it is answered instead (RPC).
   */
  deadLetter: typeof DEAD_LETTER_EXCHANGE | null;
}

/** A mail message: the raw RFC 5322 bytes as the body, the envelope as a JSON header. */
export interface MailMessageType {
  readonly name: string;
  readonly version: number;
  readonly schema: typeof Envelope;
  /** The queue its consumer reads. */
  readonly queue: 'delivery' | 'outbound';
  /** The envelope's header, and the header that repeats its version. */
  readonly header: string;
  readonly versionHeader: string;
  readonly failure: FailurePolicy;
}

const ENVELOPE_VERSION_VALUE = Envelope.shape.v.value;

export const MailMessages = {
  /**
   * Local recipients, filed by services/delivery. A Redis outage holds the message
   * (not an attempt); the broker's delivery limit (50) is the last resort. Recipients it
   * cannot serve now are not a failure: they wait in a delay queue `delivery.retry.<d>`
   * (the same message type, dead-lettered back here after the delay).
   */
  delivery: {
    name: 'mail.delivery',
    version: ENVELOPE_VERSION_VALUE,
    schema: Envelope,
    queue: Queues.delivery,
    header: ENVELOPE_HEADER,
    versionHeader: Headers.envelopeVersion,
    failure: { maxAttempts: 5, setting: 'delivery_max_attempts', deadLetter: DEAD_LETTER_EXCHANGE },
  },
  /**
   * Remote recipients, sent by services/outbound-relay. A remote refusal is an outcome,
   * not a failure: deferred recipients wait in a delay queue `outbound.retry.<d>` (the
   * same message type; the broker dead-letters it back here after the delay) and bounced
   * ones get a DSN. Failures are local errors only.
   */
  outbound: {
    name: 'mail.outbound',
    version: ENVELOPE_VERSION_VALUE,
    schema: Envelope,
    queue: Queues.outbound,
    header: ENVELOPE_HEADER,
    versionHeader: Headers.envelopeVersion,
    failure: { maxAttempts: 10, setting: 'outbound_max_attempts', deadLetter: DEAD_LETTER_EXCHANGE },
  },
} as const satisfies Record<string, MailMessageType>;

/** A request/reply type: the request is a JSON header (the body is free), the reply a JSON body. */
export interface RpcType<Req extends z.ZodType = z.ZodType, Rep extends z.ZodType = z.ZodType> {
  readonly name: string;
  readonly version: number;
  /** The queue the server consumes; replies go back by direct reply-to. */
  readonly queue: string;
  readonly request: Req;
  readonly requestHeader: string;
  readonly reply: Rep;
  /** The answer to a request the server cannot read or decide. */
  unanswerable(): z.output<Rep>;
  readonly failure: FailurePolicy;
}

export const PolicyRpc = {
  name: 'policy',
  version: PolicyRequest.shape.v.value,
  queue: Queues.policy,
  request: PolicyRequest,
  requestHeader: POLICY_REQUEST_HEADER,
  reply: PolicyDecision,
  unanswerable: () => ({
    v: PolicyDecision.shape.v.value,
    action: 'tempfail' as const,
    reply: { code: 451, enhanced: '4.3.0', text: 'Error: invalid policy request' },
    headers: [],
    removeHeaders: [],
    junk: [],
    bulk: false,
    reasons: [{ check: 'policy', result: 'bad_request' }],
  }),
  // Never run twice: an answer nobody waits for is useless. A request expires after the
  // asker's timeout (and the queue's 30 s TTL), and the asker falls back to
  // smtpd_policy_service_default_action.
  failure: { maxAttempts: 1, deadLetter: null },
} as const satisfies RpcType<typeof PolicyRequest, typeof PolicyDecision>;

/** An event: a transient JSON body on the topic exchange, seen by every subscriber. */
export interface EventType<K extends EventKey = EventKey, S extends z.ZodType = z.ZodType> {
  readonly name: K;
  readonly version: number;
  readonly schema: S;
  readonly failure: FailurePolicy;
}

// Events describe state already on disk: lost ones cost a refresh, never mail, so they
// are never retried; one that fails validation is dead-lettered so it can be looked at.
const EVENT_FAILURE: FailurePolicy = { maxAttempts: 1, deadLetter: DEAD_LETTER_EXCHANGE };

export const Events = {
  [EventKeys.mailboxChanged]: {
    name: EventKeys.mailboxChanged,
    version: MailboxChanged.shape.v.value,
    schema: MailboxChanged,
    failure: EVENT_FAILURE,
  },
  [EventKeys.learnSpam]: {
    name: EventKeys.learnSpam,
    version: LearnEvent.shape.v.value,
    schema: LearnEvent,
    failure: EVENT_FAILURE,
  },
  [EventKeys.learnHam]: {
    name: EventKeys.learnHam,
    version: LearnEvent.shape.v.value,
    schema: LearnEvent,
    failure: EVENT_FAILURE,
  },
} as const satisfies { [K in EventKey]: EventType<K> };

/** The payload a subscriber of `K` gets (validated, defaults filled in). */
export type EventPayload<K extends EventKey> = z.output<(typeof Events)[K]['schema']>;
/** What a publisher of `K` passes. */
export type EventInput<K extends EventKey> = z.input<(typeof Events)[K]['schema']>;
export type RpcRequest<R extends RpcType> = z.output<R['request']>;
export type RpcRequestInput<R extends RpcType> = z.input<R['request']>;
export type RpcReply<R extends RpcType> = z.output<R['reply']>;

/** The catalogue entry of an event routing key, or undefined for a key it does not know. */
export function eventType(key: string): EventType | undefined {
  return Object.hasOwn(Events, key) ? Events[key as EventKey] : undefined;
}
