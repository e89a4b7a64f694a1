import { z } from 'zod';
import { Filing } from './policy.js';
import { ContractError, parsePayload } from './parse.js';

/**
 * The envelope of one queued message: what SMTP said about it, kept apart from the
 * message itself (the raw RFC 5322 bytes are the AMQP body). Travels as the AMQP
 * header `x-mailyard-envelope` (JSON) and is validated by every consumer.
 *
 * Versioned: a consumer accepts only the versions it knows; bump `v` for any change
 * that an older consumer would misread, and keep reading the previous version until
 * no such message can be queued any more.
 */
export const ENVELOPE_VERSION = 1;

export const ClientInfo = z.object({
  /** The client's real IP address (after a trusted PROXY header), never a proxy's. */
  ip: z.string().min(1),
  /** Reverse DNS name, when it resolved; null when there was none. */
  hostname: z.string().nullable(),
  /** The name the client gave in HELO/EHLO. */
  helo: z.string(),
  /** TLS protocol and cipher, when the session was encrypted. */
  tls: z.object({ protocol: z.string(), cipher: z.string() }).nullable(),
  /** The authenticated user (submission), or null. */
  user: z.string().nullable().default(null),
});
export type ClientInfo = z.infer<typeof ClientInfo>;

export const Envelope = z.object({
  v: z.literal(ENVELOPE_VERSION),
  /** Our queue id: names this message in every log line, reply and Received header. */
  queueId: z.string().regex(/^[A-Za-z0-9]{8,32}$/),
  /** MAIL FROM reverse-path; the empty string is the null sender `<>`. */
  mailFrom: z.string(),
  /** Recipients this copy is for (RCPT TO forward-paths, as given by the client). */
  recipients: z.array(z.string().min(3)).min(1),
  client: ClientInfo,
  /** When we accepted the message (ISO 8601). */
  receivedAt: z.string().datetime(),
  /** Delivery attempts made so far by the consumer of this queue (0 on first publish). */
  attempts: z.number().int().nonnegative(),
  /** Message declared 8-bit (BODY=8BITMIME) or SMTPUTF8 by the client. */
  body: z.enum(['7BIT', '8BITMIME', 'BINARYMIME']).default('7BIT'),
  smtputf8: z.boolean().default(false),
  /** Last temporary error, when a retry is queued. */
  lastError: z.string().nullable().default(null),
  /** Policy verdict on filing (Junk, promotions); absent means INBOX. */
  filing: Filing.optional(),
  /**
   * Set when one AMQP message is routed to both `delivery` and `outbound` (one publish,
   * one confirm): the recipients each queue's consumer is for. Consumers read their own
   * list with `envelopeFor`, never `recipients` directly.
   */
  routes: z
    .object({
      delivery: z.array(z.string().min(3)).optional(),
      outbound: z.array(z.string().min(3)).optional(),
    })
    .optional(),
});
export type Envelope = z.infer<typeof Envelope>;
export type EnvelopeInput = z.input<typeof Envelope>;

export const ENVELOPE_HEADER = 'x-mailyard-envelope';

/** Validates an envelope from the bus; throws ContractError naming the first bad field. */
export function parseEnvelope(raw: unknown): Envelope {
  return parsePayload(Envelope, raw, 'envelope');
}

/**
 * The envelope as the consumer of `queue` must see it: `recipients` narrowed to that
 * queue's route, and `routes` dropped so that nothing derived from it (a retry, a
 * forward) can carry the other queue's recipients along.
 */
export function envelopeFor(env: Envelope, queue: 'delivery' | 'outbound'): Envelope {
  if (!env.routes) return env;
  const { routes, ...rest } = env;
  const recipients = routes[queue];
  if (!recipients?.length)
    throw new ContractError(`invalid envelope: routes.${queue}: no recipients for this queue`);
  return { ...rest, recipients };
}
