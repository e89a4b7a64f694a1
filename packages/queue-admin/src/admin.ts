import type { Redis } from 'ioredis';
import { DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS, type Bus, type BrowsedMessage } from '@mailyard/bus';
import {
  ENVELOPE_HEADER,
  LEGACY_OUTBOUND_DELAY_QUEUE_PREFIX,
  delayQueue,
  delayQueueTarget,
  legacyOutboundDelayQueue,
  RoutingKeys,
  outboundDelayQueue,
  parseEnvelope,
  type Envelope,
} from '@mailyard/contracts';
import { DeferredIndex, deferredField, sameMessage, type DeferredEntry } from './deferred-index.js';
import { QueueAdminError, reportingBrokerErrors } from './errors.js';
import { withScanLease } from './scan-lease.js';

export { QueueAdminError };

/**
 * The operations on deferred mail behind `mailyard queue` (the equivalents of mailq,
 * postqueue -f / -i and postsuper -d), for any caller: the CLI, an admin API. Deferred
 * mail is outbound-relay's (remote recipients a server put off) and delivery's (local
 * recipients it could not serve yet: an alias over ALIAS_EXPANSION_LIMIT, a mailbox it
 * cannot write to). They print nothing and exit nothing; a problem to report is a
 * QueueAdminError whose message is one sentence.
 *
 * How they work with RabbitMQ: a deferred message waits in a delay queue
 * (`outbound.retry.<d>`, `delivery.retry.<d>`), which AMQP cannot browse or index. So:
 *  - listing reads the index the relay and delivery keep in Redis (./deferred-index.ts)
 *    and looks for each message in the delay queue its entry names;
 *  - retry and delete take the messages of a delay queue one by one through the bus's
 *    inspect API (`browse`), republish (retry, confirmed, to the queue the delay queue
 *    is in front of) or drop (delete) the ones asked for, and keep the rest, which go
 *    back at their old position with their old expiry (the delay queues have no delivery
 *    limit that returns would count towards).
 */

export interface QueueAdminDeps {
  /** The broker, through the bus: its inspect API and confirmed republishing. */
  bus: Pick<Bus, 'browse' | 'republish' | 'renew'>;
  /** Where outbound-relay and delivery keep the index of deferred messages (with their key prefix). */
  redis: Redis;
  /**
   * Outbound delay queues that `retry --all`, and an id the index does not know, scan
   * besides those the index names and those the services recorded (DELAY_QUEUES_KEY)
   * (default: the default retry schedule's); delivery's of the default schedule are
   * scanned too.
   */
  delayQueues?: string[];
}

/**
 * A queue id's deferred mail as `show` finds it in the delay queues: each message of it
 * (one, or several when delivery handed outbound the queue id's recipients in several,
 * see ./deferred-index.ts), and the header block they share.
 */
export interface DeferredMessage {
  queueId: string;
  /** Soonest next try first. */
  parts: { entry: DeferredEntry; envelope: Envelope }[];
  /** The message's header block. */
  headers: string;
}

export type RetryTarget = { queueId: string } | { all: true };

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/;
const UNIT: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * The delay queues of an OUTBOUND_RETRY_SCHEDULE as outbound-relay's config writes it
 * (`5m, 30m, 2h`; bare numbers are seconds), for QueueAdminDeps.delayQueues; a delay
 * that does not parse is left out (outbound-relay refuses it at start).
 */
export function delayQueuesOf(schedule: readonly string[]): string[] {
  return schedule.flatMap((d) => {
    const m = DURATION.exec(d.trim());
    return m ? [outboundDelayQueue(Math.round(Number(m[1]) * (UNIT[m[2] ?? 's'] ?? 1000)))] : [];
  });
}

/**
 * The deferred messages that are in their delay queue now, soonest next try first: the
 * ones show, retry and delete can act on. A queue id may have several (./deferred-index.ts),
 * each with its own recipients, attempts, next try and last error. An index entry whose
 * message is not there any more (delivered or bounced while the entry was left behind, or
 * due and taken back into `outbound`) is not listed, and removed from the index unless it
 * changed meanwhile.
 */
export async function listDeferred(deps: QueueAdminDeps): Promise<DeferredEntry[]> {
  const index = new DeferredIndex(deps.redis);
  const indexed = await index.entries();
  const present = new Set<string>();
  const queues = [...new Set(indexed.map((e) => e.entry.queue))];
  const complete = await scan(deps, queues, async (_m, env, queue) => {
    if (env) present.add(`${queue}\0${deferredField(env.queueId, env.recipients)}`);
    return 'keep';
  });
  const out: DeferredEntry[] = [];
  const now = Date.now();
  for (const { field, entry, raw } of indexed) {
    if (present.has(`${entry.queue}\0${deferredField(entry.queueId, entry.recipients)}`)) out.push(entry);
    // an entry is taken for gone only when no other reader held messages out of sight,
    // and once its message was due to leave the queue: one not due may still be on its
    // way back from an earlier reader (a quorum queue takes it back after the close)
    else if (complete && Date.parse(entry.nextTry) <= now) await index.removeIfUnchanged(field, raw);
  }
  return out;
}

/**
 * Every deferred message of a queue id, with its envelope, and their headers, read from
 * their delay queues without removing them; null when none is there.
 */
export async function showDeferred(deps: QueueAdminDeps, queueId: string): Promise<DeferredMessage | null> {
  const entries = await new DeferredIndex(deps.redis).ofQueueId(queueId);
  if (!entries.length) return null;
  const parts: DeferredMessage['parts'] = [];
  let headers: string | null = null;
  await scan(deps, [...new Set(entries.map((e) => e.queue))], async (m, env, queue) => {
    if (env?.queueId !== queueId) return 'keep';
    const entry = entries.find(
      (e) =>
        e.queue === queue && sameMessage(e, env.queueId, env.recipients) && !parts.some((p) => p.entry === e),
    );
    if (!entry) return 'keep';
    parts.push({ entry, envelope: env });
    headers ??= headerBlock(m.body);
    return 'keep';
  });
  if (headers === null) return null;
  parts.sort((a, b) => a.entry.nextTry.localeCompare(b.entry.nextTry));
  return { queueId, parts, headers };
}

/**
 * Sends deferred messages back to `outbound` or `delivery`, whichever deferred them, now
 * (postqueue -i / -f): every message of the queue id, or every one; returns how many.
 */
export async function retryDeferred(deps: QueueAdminDeps, target: RetryTarget): Promise<number> {
  const index = new DeferredIndex(deps.redis);
  let n = 0;
  await scan(deps, await queuesFor(deps, index, target), async (m, env, queue) => {
    if ('queueId' in target && env?.queueId !== target.queueId) return 'keep';
    // the legacy `outbound.delay.<d>` queues are the relay's too
    await deps.bus.republish(m, delayQueueTarget(queue) ?? RoutingKeys.outbound);
    // the copy is confirmed: the original goes whatever Redis says, or it is sent twice;
    // an entry left behind is dropped by the next list, which finds no message for it
    if (env) await index.remove(env.queueId, env.recipients).catch(() => undefined);
    n++;
    return 'ack';
  });
  return n;
}

/**
 * Deletes every deferred message of a queue id without a bounce (postsuper -d: all its
 * recipients); returns how many there were.
 */
export async function deleteDeferred(deps: QueueAdminDeps, queueId: string): Promise<number> {
  const index = new DeferredIndex(deps.redis);
  const deleted: Envelope[] = [];
  await scan(deps, await queuesFor(deps, index, { queueId }), async (_m, env) => {
    if (env?.queueId !== queueId) return 'keep';
    deleted.push(env);
    return 'ack';
  });
  for (const env of deleted) await index.remove(env.queueId, env.recipients);
  return deleted.length;
}

async function queuesFor(deps: QueueAdminDeps, index: DeferredIndex, target: RetryTarget): Promise<string[]> {
  // the delay queues of every message of the queue id: after different numbers of
  // attempts they wait in different ones
  if ('queueId' in target) {
    const entries = await index.ofQueueId(target.queueId);
    if (entries.length) return [...new Set(entries.map((e) => e.queue))];
  }
  // the queues the services recorded, whatever schedule they run on (DELAY_QUEUES_KEY),
  // and the default schedules' for what was deferred before they recorded any
  const recorded = await index.delayQueues();
  const scheduled = [
    ...(deps.delayQueues ?? DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS.map(outboundDelayQueue)),
    ...recorded.filter((q) => delayQueueTarget(q) === RoutingKeys.outbound),
  ];
  // and the classic queues of earlier releases, until outbound-relay has removed them
  const legacy = scheduled.map(legacyOutboundDelayQueue);
  const delivery = DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS.map((d) => delayQueue(RoutingKeys.delivery, d));
  const indexed = (await index.list()).map((e) => e.queue);
  const names = new Set([...scheduled, ...legacy, ...delivery, ...recorded, ...indexed]);
  const delay = (q: string) =>
    delayQueueTarget(q) !== null || q.startsWith(LEGACY_OUTBOUND_DELAY_QUEUE_PREFIX);
  return [...names].filter(delay);
}

/**
 * Takes every message of each queue once; `visit` says whether it is done with (acked:
 * republished or deleted) or kept. A queue that is not declared holds nothing. One scan
 * at a time (./scan-lease.ts); true when the lease held throughout, so that a message
 * not seen was not in the queues.
 */
async function scan(
  deps: QueueAdminDeps,
  queues: string[],
  visit: (m: BrowsedMessage, env: Envelope | null, queue: string) => Promise<'ack' | 'keep'>,
): Promise<boolean> {
  return reportingBrokerErrors(() =>
    withScanLease(
      deps.redis,
      () => new QueueAdminError('another queue command is still reading the delay queues; try again'),
      async (lease) => {
        for (const queue of queues) await deps.bus.browse(queue, (m) => visit(m, envelopeOf(m), queue));
        return lease.held();
      },
    ),
  );
}

function envelopeOf(m: BrowsedMessage): Envelope | null {
  try {
    return parseEnvelope(m.headers[ENVELOPE_HEADER]);
  } catch {
    return null;
  }
}

/** A message's header block, without the blank line that ends it (all of it when none does). */
export function headerBlock(message: Buffer): string {
  const end = message.indexOf('\r\n\r\n');
  return message.subarray(0, end === -1 ? message.length : end).toString('utf8');
}
