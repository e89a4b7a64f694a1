import { connect, type ChannelModel, type ConfirmChannel, type GetMessage } from 'amqplib';
import type { Redis } from 'ioredis';
import { DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS } from '@mailyard/bus';
import {
  ENVELOPE_HEADER,
  MAIL_EXCHANGE,
  OUTBOUND_DELAY_QUEUE_PREFIX,
  RoutingKeys,
  outboundDelayQueue,
  parseEnvelope,
  type Envelope,
} from '@mailyard/contracts';

/**
 * Queue inspection for deferred outbound mail (the equivalents of mailq, postqueue -f
 * and postsuper -d).
 *
 * How it works with RabbitMQ: a deferred message waits in a delay queue
 * (`outbound.delay.<d>`), which AMQP cannot browse or index. So:
 *  - listing reads an index in Redis that outbound-relay writes when it defers a
 *    message (and clears when the message comes back): queue id, sender, recipients,
 *    attempts, last error, next try, and which delay queue holds it;
 *  - retry and delete take messages out of the delay queue with basic.get on a channel
 *    of their own, republish (retry, with a publisher confirm) or drop (delete) the
 *    ones asked for and ack them, and leave the rest unacked; closing the channel
 *    returns those to the queue at their old position with their old expiry (delay
 *    queues are classic queues for exactly this reason).
 * The message bytes stay in RabbitMQ only; Redis holds the small index.
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

export class QueueAdminError extends Error {
  override readonly name = 'QueueAdminError';
}

export interface QueueAdminOptions {
  amqpUrl: string;
  redis: Redis;
  /** Delay queues to scan for `retry --all` besides those named in the index. */
  delayQueues?: string[];
}

/** Operations on deferred messages; one instance per CLI invocation. */
export class QueueAdmin {
  readonly index: DeferredIndex;
  private conn: ChannelModel | null = null;

  constructor(private readonly opts: QueueAdminOptions) {
    this.index = new DeferredIndex(opts.redis);
  }

  /**
   * The deferred messages that are in their delay queue now, which show, retry and
   * delete can act on. An index entry whose message is not there any more (delivered or
   * bounced while the entry was left behind, or due and taken back into `outbound`) is
   * not listed, and removed from the index unless it changed meanwhile.
   */
  async list(): Promise<DeferredEntry[]> {
    const indexed = await this.index.entries();
    const present = new Set<string>();
    for (const queue of new Set(indexed.map((e) => e.entry.queue))) {
      await this.scan([queue], (_msg, env) => {
        if (env) present.add(`${queue}\0${env.queueId}`);
        return Promise.resolve('keep' as const);
      });
    }
    const out: DeferredEntry[] = [];
    for (const { entry, raw } of indexed) {
      if (present.has(`${entry.queue}\0${entry.queueId}`)) out.push(entry);
      else await this.index.removeIfUnchanged(entry.queueId, raw);
    }
    return out;
  }

  /** The index entry plus the message's headers, read from the delay queue without removing it. */
  async show(queueId: string): Promise<{ entry: DeferredEntry; envelope: Envelope; headers: string } | null> {
    const entry = await this.index.get(queueId);
    if (!entry) return null;
    let found: { envelope: Envelope; headers: string } | null = null;
    await this.scan([entry.queue], async (msg, env) => {
      if (env?.queueId !== queueId || found) return 'keep';
      const body = msg.content;
      const end = body.indexOf('\r\n\r\n');
      found = { envelope: env, headers: body.subarray(0, end === -1 ? body.length : end).toString('utf8') };
      return 'keep';
    });
    return found ? { entry, ...(found as { envelope: Envelope; headers: string }) } : null;
  }

  /** Sends deferred messages back to `outbound` now (postqueue -i / -f); returns how many. */
  async retry(target: { queueId: string } | { all: true }): Promise<number> {
    const queues = await this.queuesFor(target);
    let n = 0;
    await this.scan(queues, async (msg, env, pub) => {
      if ('queueId' in target && env?.queueId !== target.queueId) return 'keep';
      await publishConfirmed(pub, msg);
      if (env) await this.index.remove(env.queueId);
      n++;
      return 'ack';
    });
    return n;
  }

  /** Deletes a deferred message without a bounce (postsuper -d); returns whether it was found. */
  async delete(queueId: string): Promise<boolean> {
    const queues = await this.queuesFor({ queueId });
    let n = 0;
    await this.scan(queues, async (_msg, env) => {
      if (env?.queueId !== queueId) return 'keep';
      n++;
      return 'ack';
    });
    if (n) await this.index.remove(queueId);
    return n > 0;
  }

  async close(): Promise<void> {
    await this.conn?.close().catch(() => undefined);
    this.conn = null;
  }

  private async queuesFor(target: { queueId: string } | { all: true }): Promise<string[]> {
    if ('queueId' in target) {
      const entry = await this.index.get(target.queueId);
      if (entry) return [entry.queue];
    }
    const names = new Set([
      ...(this.opts.delayQueues ?? DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS.map(outboundDelayQueue)),
      ...(await this.index.list()).map((e) => e.queue),
    ]);
    return [...names].filter((q) => q.startsWith(OUTBOUND_DELAY_QUEUE_PREFIX));
  }

  private async connection(): Promise<ChannelModel> {
    if (!this.conn) {
      try {
        this.conn = await connect(this.opts.amqpUrl, { timeout: 5000 });
      } catch (err) {
        throw new QueueAdminError(`cannot connect to RabbitMQ: ${(err as Error).message}`);
      }
      this.conn.on('error', () => undefined);
    }
    return this.conn;
  }

  /**
   * Takes every message of each queue once with basic.get; `visit` says whether to ack
   * it (it was republished or is to be deleted) or keep it. Kept messages return to
   * the queue, in order and with their expiry, when the channel closes.
   */
  private async scan(
    queues: string[],
    visit: (msg: GetMessage, env: Envelope | null, pub: ConfirmChannel) => Promise<'ack' | 'keep'>,
  ): Promise<void> {
    if (!queues.length) return;
    const conn = await this.connection();
    for (const queue of queues) {
      const ch = await conn.createConfirmChannel();
      ch.on('error', () => undefined);
      try {
        let count: number;
        try {
          count = (await ch.checkQueue(queue)).messageCount;
        } catch {
          continue; // queue not declared (a schedule not in use): nothing deferred there
        }
        for (let i = 0; i < count; i++) {
          const msg = await ch.get(queue, { noAck: false });
          if (!msg) break;
          let env: Envelope | null = null;
          try {
            env = parseEnvelope(msg.properties.headers?.[ENVELOPE_HEADER]);
          } catch {
            env = null;
          }
          if ((await visit(msg, env, ch)) === 'ack') ch.ack(msg);
        }
      } finally {
        await ch.close().catch(() => undefined);
      }
    }
  }
}

async function publishConfirmed(ch: ConfirmChannel, msg: GetMessage): Promise<void> {
  const headers = { ...(msg.properties.headers ?? {}) };
  delete headers['x-death'];
  delete headers['x-first-death-exchange'];
  delete headers['x-first-death-queue'];
  delete headers['x-first-death-reason'];
  await new Promise<void>((resolve, reject) => {
    ch.publish(
      MAIL_EXCHANGE,
      RoutingKeys.outbound,
      msg.content,
      { persistent: true, mandatory: true, headers },
      (err: Error | null) =>
        err ? reject(new QueueAdminError(`RabbitMQ refused the message: ${err.message}`)) : resolve(),
    );
  });
}
