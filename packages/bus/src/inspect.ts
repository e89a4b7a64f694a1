import type { Channel, ChannelModel } from 'amqplib';
import type { BrowsedMessage, QueueInfo } from './bus.js';

/**
 * Queue inspection on channels of its own: a passive declare of a missing queue, or a
 * failed basic.get, closes the channel it was made on, and must not take the publish
 * channel or a consumer's with it.
 */

const notFound = (err: unknown) => (err as { code?: number }).code === 404;

async function onSideChannel<T>(conn: ChannelModel, fn: (ch: Channel) => Promise<T>): Promise<T> {
  const ch = await conn.createChannel();
  ch.on('error', () => undefined);
  try {
    return await fn(ch);
  } finally {
    await ch.close().catch(() => undefined);
  }
}

/** Depth and consumers of `queue`; null when it is not declared. */
export function inspectQueue(conn: ChannelModel, queue: string): Promise<QueueInfo | null> {
  return onSideChannel(conn, async (ch) => {
    try {
      const q = await ch.checkQueue(queue);
      return { messages: q.messageCount, consumers: q.consumerCount };
    } catch (err) {
      if (notFound(err)) return null;
      throw err;
    }
  });
}

/**
 * Takes every message of `queue` once with basic.get (no auto-ack); `visit` says whether
 * to acknowledge it (it was published again, or is to be dropped) or keep it. Kept
 * messages return to the queue when the channel closes, at their old position and with
 * their expiry. Meant for classic queues: a quorum queue counts every return towards its
 * delivery limit. False when the queue is not declared.
 */
export function browseQueue(
  conn: ChannelModel,
  queue: string,
  visit: (m: BrowsedMessage) => Promise<'ack' | 'keep'>,
): Promise<boolean> {
  return onSideChannel(conn, async (ch) => {
    let count: number;
    try {
      count = (await ch.checkQueue(queue)).messageCount;
    } catch (err) {
      if (notFound(err)) return false;
      throw err;
    }
    for (let i = 0; i < count; i++) {
      const msg = await ch.get(queue, { noAck: false });
      if (!msg) break;
      const headers = (msg.properties.headers ?? {}) as Record<string, unknown>;
      if ((await visit({ body: msg.content, headers })) === 'ack') ch.ack(msg);
    }
    return true;
  });
}

/** RabbitMQ's record of a message's dead-lettering, which a message published anew must not carry. */
const DEATH_HEADERS = ['x-death', 'x-first-death-exchange', 'x-first-death-queue', 'x-first-death-reason'];

export function withoutDeathHeaders(headers: Record<string, unknown>): Record<string, unknown> {
  const out = { ...headers };
  for (const h of DEATH_HEADERS) delete out[h];
  return out;
}
