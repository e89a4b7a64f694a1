import { createHash } from 'node:crypto';
import { UnroutableError, type BrowsedMessage, type RepublishTarget } from '@mailyard/bus';
import {
  ContractError,
  DEAD_LETTERED_EVENT_PREFIX,
  ENVELOPE_HEADER,
  EVENTS_EXCHANGE,
  Headers,
  MAIL_EXCHANGE,
  Queues,
  envelopeFor,
  parseEnvelope,
  type Envelope,
} from '@mailyard/contracts';
import { headerBlock, type QueueAdminDeps, type RetryTarget } from './admin.js';
import { QueueAdminError, reportingBrokerErrors } from './errors.js';
import { DEAD_LETTER_SCAN_LEASE_KEY, withScanLease } from './scan-lease.js';

/**
 * The dead-letter queue behind `mailyard queue dead` (Postfix's hold queue with
 * `postsuper -r` / `-d` and `postcat`): what no consumer could handle, whether the bus
 * gave it up after its attempts (the reason, original queue, attempts and time in its
 * x-mailyard-* headers) or RabbitMQ did after the queue's delivery limit (x-death).
 * Listed, shown, sent back to where it came from once the cause is fixed, or deleted.
 * Like ./admin.ts they print nothing and exit nothing; a problem is a QueueAdminError.
 *
 * The queue is read as the delay queues are: every message taken once with basic.get on
 * a channel of its own, acked when done with (requeued after the confirm, or deleted),
 * the others returned together when the channel closes. A quorum queue counts each such
 * return as a delivery: RabbitMQ 3.x sets no limit, but 4.0 to 4.2 give every quorum
 * queue a delivery limit of 20 and drop a message over it when the queue has no
 * dead-letter exchange, as `dead-letter` has none. So a letter read RENEW_AFTER times
 * is put back as a new copy (its headers kept, its counts not) and the original acked:
 * browsing never wears a letter out. A limit set lower than that by a policy would still
 * do so; see docs/architecture.md.
 */

export interface DeadLetter {
  /**
   * The envelope's queue id, as in the log lines of its failed runs; for a message
   * without one (an event, an envelope that is not JSON) `dl-` and a digest of it.
   */
  queueId: string;
  /**
   * Where it was taken from: `delivery`, `outbound`, `events/<routing key>` for an event;
   * null when the message does not say.
   */
  originalQueue: string | null;
  /** Whether `requeue` can send it back there (a mail queue or an event). */
  requeueable: boolean;
  /** The consumer's last error, or RabbitMQ's reason (`delivery_limit`). */
  reason: string | null;
  /** Runs before it was given up, when known. */
  attempts: number | null;
  /** ISO 8601, when known (dead letters of earlier releases do not say). */
  deadLetteredAt: string | null;
  mailFrom: string | null;
  /** The recipients of the original queue's copy. */
  recipients: string[];
  size: number;
}

/** The dead letters of a queue id, and the header block of their message (an event's payload). */
export interface DeadLetterMessage {
  queueId: string;
  letters: DeadLetter[];
  headers: string;
}

export interface RequeueResult {
  requeued: DeadLetter[];
  /** Those of the target left in the dead-letter queue, each with why. */
  kept: { letter: DeadLetter; why: string }[];
}

/** A letter taken from the queue this many times (the broker's count) is put back anew. */
export const RENEW_AFTER = 10;

/** What the bus adds when it dead-letters, and a requeued message must not carry. */
const DEAD_LETTER_HEADERS = [
  Headers.deadLetterReason,
  Headers.deadLetterQueue,
  Headers.deadLetterAttempts,
  Headers.deadLetterTime,
];

/** The dead letters, oldest first (those of unknown time before them). */
export async function listDeadLetters(deps: QueueAdminDeps): Promise<DeadLetter[]> {
  const out: DeadLetter[] = [];
  const complete = await scan(deps, async (_m, letter) => {
    out.push(letter);
    return 'keep';
  });
  if (!complete) throw leaseLost();
  return out.sort(byTime);
}

/** The dead letters of a queue id with their message's headers, left in place; null when none. */
export async function showDeadLetters(
  deps: QueueAdminDeps,
  queueId: string,
): Promise<DeadLetterMessage | null> {
  const letters: DeadLetter[] = [];
  let headers = '';
  const complete = await scan(deps, async (m, letter) => {
    if (letter.queueId !== queueId) return 'keep';
    if (!letters.length) headers = headersOf(m);
    letters.push(letter);
    return 'keep';
  });
  if (!complete) throw leaseLost();
  return letters.length ? { queueId, letters: letters.sort(byTime), headers } : null;
}

/**
 * Sends the dead letters of a queue id (or all) back to their original queue, or for an
 * event to the events exchange under its key, each acked from `dead-letter` only once
 * the broker has confirmed its copy. The copy carries the message's own headers (the
 * envelope as it was), not the record of its dead-lettering nor the broker's counts, so
 * the consumer runs it afresh with all its attempts. A letter whose queue is unknown,
 * or which nothing would take now (an event without subscribers), stays.
 *
 * An event is read by every subscriber from a queue of its own, so one that none could
 * take was dead-lettered once by each: the same body under the same key, N letters with
 * one `dl-` id. It is published once, which every subscriber gets, and the other copies
 * are acked after that one's confirm (the scan visits them in turn) or stay with it;
 * publishing each would hand every subscriber N copies (`learn.spam` training N times).
 */
export async function requeueDeadLetters(deps: QueueAdminDeps, target: RetryTarget): Promise<RequeueResult> {
  const result: RequeueResult = { requeued: [], kept: [] };
  /** Each event published (null) or kept (why), by the digest of its key and body. */
  const events = new Map<string, string | null>();
  const complete = await scan(deps, async (m, letter) => {
    if ('queueId' in target && letter.queueId !== target.queueId) return 'keep';
    const to = destinationOf(letter.originalQueue);
    if (!to) {
      const why = letter.originalQueue
        ? `it came from ${letter.originalQueue}, which requeue cannot send to`
        : 'it does not say which queue it came from';
      result.kept.push({ letter, why });
      return 'keep';
    }
    const event = to.exchange === EVENTS_EXCHANGE ? digest(to.routingKey, m.body, 64) : null;
    let why = event === null ? undefined : events.get(event);
    if (why === undefined) {
      why = await republished(deps, m, to, letter);
      if (event !== null) events.set(event, why);
    }
    if (why !== null) {
      result.kept.push({ letter, why });
      return 'keep';
    }
    result.requeued.push(letter);
    return 'ack';
  });
  if (!complete && !result.requeued.length && !result.kept.length) throw leaseLost();
  return result;
}

/** Publishes a letter's copy, confirmed; null when sent, or why it stays. */
async function republished(
  deps: QueueAdminDeps,
  m: BrowsedMessage,
  to: RepublishTarget,
  letter: DeadLetter,
): Promise<string | null> {
  try {
    await deps.bus.republish(m, to, DEAD_LETTER_HEADERS);
    return null;
  } catch (err) {
    if (!(err instanceof UnroutableError)) throw err;
    return `nothing consumes ${letter.originalQueue} now`;
  }
}

/**
 * The one sentence for dead letters a requeue left in place, naming a few: what
 * `mailyard queue dead requeue` and the admin console both say.
 */
export function stayedSentence(kept: RequeueResult['kept']): string {
  const named = kept.slice(0, 3).map((k) => `${k.letter.queueId} (${k.why})`);
  const more = kept.length > named.length ? ` and ${kept.length - named.length} more` : '';
  const letters = `${kept.length} dead letter${kept.length === 1 ? '' : 's'}`;
  return `${letters} stayed in the queue: ${named.join(', ')}${more}`;
}

/** Deletes the dead letters of a queue id (or all); returns those deleted. */
export async function deleteDeadLetters(deps: QueueAdminDeps, target: RetryTarget): Promise<DeadLetter[]> {
  const deleted: DeadLetter[] = [];
  const complete = await scan(deps, async (_m, letter) => {
    if ('queueId' in target && letter.queueId !== target.queueId) return 'keep';
    deleted.push(letter);
    return 'ack';
  });
  if (!complete && !deleted.length) throw leaseLost();
  return deleted;
}

/**
 * Takes every dead letter once, one reader at a time (./scan-lease.ts); `visit` says
 * whether it is done with. One kept that the queue has handed out RENEW_AFTER times is
 * put back as a new copy and the original acked (see the top of this file). True when
 * the lease held throughout: a letter not seen was not in the queue. Otherwise (Redis
 * failed a renewal, or the scan stalled past the lease) another reader may have held
 * letters out of sight meanwhile, and "none" or a short list would be false.
 */
async function scan(
  deps: QueueAdminDeps,
  visit: (m: BrowsedMessage, letter: DeadLetter) => Promise<'ack' | 'keep'>,
): Promise<boolean> {
  return reportingBrokerErrors(() =>
    withScanLease(
      deps.redis,
      () => new QueueAdminError('another queue command is still reading the dead-letter queue; try again'),
      async (lease) => {
        await deps.bus.browse(Queues.deadLetter, async (m) => {
          if ((await visit(m, readLetter(m))) === 'ack') return 'ack';
          if (Number(m.headers['x-delivery-count'] ?? 0) < RENEW_AFTER) return 'keep';
          // a failure leaves it as it is, one return closer to a limit it is still far from
          return deps.bus.renew(m, Queues.deadLetter).then(
            () => 'ack' as const,
            () => 'keep' as const,
          );
        });
        return lease.held();
      },
      undefined,
      DEAD_LETTER_SCAN_LEASE_KEY,
    ),
  );
}

/**
 * What a scan that lost its lease answers instead of what it saw. A requeue or deletion
 * that did act reports what it did (that happened, and is audited); a second run does
 * the rest.
 */
const leaseLost = () =>
  new QueueAdminError(
    'the dead-letter queue could not be read alone (the read lock in Redis was lost); try again',
  );

function destinationOf(queue: string | null): RepublishTarget | null {
  if (queue === Queues.delivery || queue === Queues.outbound)
    return { exchange: MAIL_EXCHANGE, routingKey: queue };
  const key = queue?.startsWith(DEAD_LETTERED_EVENT_PREFIX)
    ? queue.slice(DEAD_LETTERED_EVENT_PREFIX.length)
    : '';
  // events are transient, as publishEvent sends them
  return key ? { exchange: EVENTS_EXCHANGE, routingKey: key, persistent: false } : null;
}

function readLetter(m: BrowsedMessage): DeadLetter {
  const h = m.headers;
  // RabbitMQ's own record, newest first, of one it dead-lettered itself (delivery limit)
  const death = Array.isArray(h['x-death'])
    ? (h['x-death'][0] as Record<string, unknown> | undefined)
    : undefined;
  const originalQueue = text(h[Headers.deadLetterQueue]) ?? text(h['x-first-death-queue']);
  const env = envelopeOf(h[ENVELOPE_HEADER], originalQueue);
  const attempts = Number(h[Headers.deadLetterAttempts]);
  const reason = text(h[Headers.deadLetterReason]);
  const brokerReason = text(h['x-first-death-reason']);
  return {
    queueId: env.queueId ?? `dl-${digest(originalQueue, m.body)}`,
    originalQueue,
    requeueable: destinationOf(originalQueue) !== null,
    reason: reason ?? (brokerReason ? `RabbitMQ: ${brokerReason}` : null),
    attempts: Number.isInteger(attempts) && attempts > 0 ? attempts : null,
    deadLetteredAt: isoTime(text(h[Headers.deadLetterTime])) ?? timestamp(death?.time),
    mailFrom: env.mailFrom ?? null,
    recipients: env.recipients ?? [],
    size: m.body.length,
  };
}

const QUEUE_ID = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * The envelope's facts as the original queue's consumer saw them; from a header that
 * fails validation (a letter dead-lettered for it), what can still be read of it.
 */
function envelopeOf(
  raw: unknown,
  queue: string | null,
): Partial<Pick<Envelope, 'queueId' | 'mailFrom' | 'recipients'>> {
  try {
    const env = parseEnvelope(raw);
    return queue === Queues.delivery || queue === Queues.outbound ? envelopeFor(env, queue) : env;
  } catch (err) {
    if (!(err instanceof ContractError)) throw err;
  }
  let loose: Record<string, unknown>;
  try {
    loose = JSON.parse(String(raw)) as Record<string, unknown>;
    if (typeof loose !== 'object' || loose === null) return {};
  } catch {
    return {};
  }
  const { queueId, mailFrom, recipients } = loose;
  return {
    ...(typeof queueId === 'string' && QUEUE_ID.test(queueId) ? { queueId } : {}),
    ...(typeof mailFrom === 'string' ? { mailFrom } : {}),
    ...(Array.isArray(recipients) ? { recipients: recipients.filter((r) => typeof r === 'string') } : {}),
  };
}

/** The message's header block; for a message that is not one (an event), its body. */
function headersOf(m: BrowsedMessage): string {
  return m.headers[ENVELOPE_HEADER] === undefined ? m.body.toString('utf8') : headerBlock(m.body);
}

function digest(queue: string | null, body: Buffer, length = 12): string {
  return createHash('sha256')
    .update(queue ?? '')
    .update('\0')
    .update(body)
    .digest('hex')
    .slice(0, length);
}

function text(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  return null;
}

function isoTime(s: string | null): string | null {
  const t = s === null ? NaN : Date.parse(s);
  return Number.isNaN(t) ? null : new Date(t).toISOString();
}

/** An AMQP timestamp as amqplib reads it (seconds, typed) into ISO 8601. */
function timestamp(v: unknown): string | null {
  const seconds = typeof v === 'object' && v !== null && 'value' in v ? Number(v.value) : Number(v);
  return Number.isFinite(seconds) && seconds > 0 ? new Date(seconds * 1000).toISOString() : null;
}

function byTime(a: DeadLetter, b: DeadLetter): number {
  return (a.deadLetteredAt ?? '').localeCompare(b.deadLetteredAt ?? '');
}
