import type { Redis } from 'ioredis';

/**
 * The index of deferred outbound messages: the runtime state outbound-relay keeps in
 * Redis beside the delay queues, which AMQP cannot browse or index. The relay writes an
 * entry when it defers a message and clears it when the message comes back; `mailyard
 * queue` (./admin.ts) reads it. Redis only: the message bytes stay in RabbitMQ.
 */

export const DEFERRED_INDEX_KEY = 'outbound:deferred';

/** HDEL of one field only while it still holds the value that was read. */
const REMOVE_IF_UNCHANGED = `
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0`;

export interface DeferredEntry {
  queueId: string;
  mailFrom: string;
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

/** The Redis index of deferred messages (written by outbound-relay, read by the CLI). */
export class DeferredIndex {
  constructor(private readonly redis: Redis) {}

  async add(entry: DeferredEntry): Promise<void> {
    await this.redis.hset(DEFERRED_INDEX_KEY, entry.queueId, JSON.stringify(entry));
  }

  async remove(queueId: string): Promise<void> {
    await this.redis.hdel(DEFERRED_INDEX_KEY, queueId);
  }

  async get(queueId: string): Promise<DeferredEntry | null> {
    const raw = await this.redis.hget(DEFERRED_INDEX_KEY, queueId);
    return raw ? (JSON.parse(raw) as DeferredEntry) : null;
  }

  /** Every deferred message, soonest next try first. */
  async list(): Promise<DeferredEntry[]> {
    return (await this.entries()).map((e) => e.entry);
  }

  /** The entries with the text they were read as (for removeIfUnchanged). */
  async entries(): Promise<{ entry: DeferredEntry; raw: string }[]> {
    const all = await this.redis.hgetall(DEFERRED_INDEX_KEY);
    return Object.values(all)
      .map((raw) => ({ entry: JSON.parse(raw) as DeferredEntry, raw }))
      .sort((a, b) => a.entry.nextTry.localeCompare(b.entry.nextTry));
  }

  /** Removes an entry unless it changed since it was read as `raw` (deferred again meanwhile). */
  async removeIfUnchanged(queueId: string, raw: string): Promise<void> {
    await this.redis.eval(REMOVE_IF_UNCHANGED, 1, DEFERRED_INDEX_KEY, queueId, raw);
  }
}
