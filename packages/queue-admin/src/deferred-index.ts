import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

/**
 * The index of deferred messages: the runtime state outbound-relay and delivery keep in
 * Redis beside their delay queues, which AMQP cannot browse or index. Each writes an
 * entry when it defers a message (the delay queue it waits in says whose it is) and
 * clears it when the message comes back; `mailyard queue` (./admin.ts) reads it. Redis
 * only: the message bytes stay in RabbitMQ. (The key keeps the name it had when only the
 * relay wrote it.)
 *
 * One entry per outbound message, not per queue id: several messages can share a queue
 * id (delivery hands the members of an alias outside our domains to outbound in as many
 * messages as their envelopes need, beside the message's own copy for its remote
 * recipients), and each is deferred, comes back and is deleted on its own. An entry's
 * field is the queue id plus a digest of the message's recipients (deferredField): what
 * the relay wrote into the deferred copy's envelope, so it finds the same field when the
 * copy comes back, and so does `mailyard queue` from a message it reads in a delay queue,
 * without a new envelope field that messages already queued would lack. Two messages of
 * a queue id for the same recipients (an address that is both a recipient and an alias
 * member) share an entry, as they share the record of who was delivered.
 */

export const DEFERRED_INDEX_KEY = 'outbound:deferred';

/**
 * The delay queues the relays and delivery have declared, whatever their schedules (a
 * set of names). AMQP cannot list a broker's queues, and the schedule a command or the
 * console could read from its own config need not be the service's, nor the one the
 * waiting messages were deferred on: each service adds the queues of its schedule at
 * start, and the queue of every message it indexes. Never pruned: a schedule changed
 * since leaves messages in the queues of the old one.
 */
export const DELAY_QUEUES_KEY = 'outbound:deferred:queues';

/** HDEL of one field only while it still holds the value that was read. */
const REMOVE_IF_UNCHANGED = `
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0`;

export interface DeferredEntry {
  queueId: string;
  mailFrom: string;
  /** The recipients of this message (of the queue id's, the ones it carries and still has to deliver). */
  recipients: string[];
  attempts: number;
  lastError: string | null;
  receivedAt: string;
  /** When the message leaves its delay queue (ISO 8601). */
  nextTry: string;
  /** The delay queue holding it. */
  queue: string;
  size: number;
}

/**
 * The index field of the deferred message of `queueId` for `recipients` (its envelope's,
 * in any order). Entries of earlier releases have the queue id alone as their field; they
 * are read as any other (what a field stands for is read from its entry, see sameMessage)
 * and go when their message comes back.
 */
export function deferredField(queueId: string, recipients: readonly string[]): string {
  const digest = createHash('sha256')
    .update(JSON.stringify([...recipients].sort()))
    .digest('hex')
    .slice(0, 16);
  return `${queueId}/${digest}`;
}

/** Whether an entry is the one of the message of `queueId` for `recipients`. */
export function sameMessage(entry: DeferredEntry, queueId: string, recipients: readonly string[]): boolean {
  return deferredField(entry.queueId, entry.recipients) === deferredField(queueId, recipients);
}

/** An entry with the field it is stored under and the text it was read as (for removeIfUnchanged). */
export interface StoredEntry {
  field: string;
  entry: DeferredEntry;
  raw: string;
}

/** The Redis index of deferred messages (written by outbound-relay and delivery, read by the CLI). */
export class DeferredIndex {
  constructor(private readonly redis: Redis) {}

  /** The entry, and its delay queue among those recorded: one round trip. */
  async add(entry: DeferredEntry): Promise<void> {
    await Promise.all([
      this.redis.sadd(DELAY_QUEUES_KEY, entry.queue),
      this.redis.hset(
        DEFERRED_INDEX_KEY,
        deferredField(entry.queueId, entry.recipients),
        JSON.stringify(entry),
      ),
    ]);
  }

  /** Records delay queues a service has declared (DELAY_QUEUES_KEY), at its start. */
  async addDelayQueues(names: readonly string[]): Promise<void> {
    if (names.length) await this.redis.sadd(DELAY_QUEUES_KEY, ...names);
  }

  /** Every delay queue a service has recorded (DELAY_QUEUES_KEY). */
  async delayQueues(): Promise<string[]> {
    return this.redis.smembers(DELAY_QUEUES_KEY);
  }

  /** Removes the entry of the message of `queueId` for `recipients` (back from its delay queue, or deleted). */
  async remove(queueId: string, recipients: readonly string[]): Promise<void> {
    await this.redis.hdel(DEFERRED_INDEX_KEY, deferredField(queueId, recipients));
    // and one an earlier release wrote for the same message under the queue id alone
    // (one for another message of the queue id stays)
    const raw = await this.redis.hget(DEFERRED_INDEX_KEY, queueId);
    if (raw && sameMessage(JSON.parse(raw) as DeferredEntry, queueId, recipients))
      await this.removeIfUnchanged(queueId, raw);
  }

  /** The entries of every deferred message of a queue id, soonest next try first. */
  async ofQueueId(queueId: string): Promise<DeferredEntry[]> {
    return (await this.entries()).filter((e) => e.entry.queueId === queueId).map((e) => e.entry);
  }

  /** Every deferred message, soonest next try first. */
  async list(): Promise<DeferredEntry[]> {
    return (await this.entries()).map((e) => e.entry);
  }

  /** The entries with their fields and the text they were read as, soonest next try first. */
  async entries(): Promise<StoredEntry[]> {
    const all = await this.redis.hgetall(DEFERRED_INDEX_KEY);
    return Object.entries(all)
      .map(([field, raw]) => ({ field, entry: JSON.parse(raw) as DeferredEntry, raw }))
      .sort((a, b) => a.entry.nextTry.localeCompare(b.entry.nextTry));
  }

  /** Removes an entry unless it changed since it was read as `raw` (deferred again meanwhile). */
  async removeIfUnchanged(field: string, raw: string): Promise<void> {
    await this.redis.eval(REMOVE_IF_UNCHANGED, 1, DEFERRED_INDEX_KEY, field, raw);
  }
}
