import type { Channel, ChannelModel } from 'amqplib';
import type { BrowsedMessage, QueueInfo } from './bus.js';
import { within } from '@mailyard/config';
import { BusUnavailableError } from './errors.js';

/**
 * Queue inspection on channels of its own: a passive declare of a missing queue, or a
 * failed basic.get, closes the channel it was made on, and must not take the publish
 * channel or a consumer's with it.
 */

const notFound = (err: unknown) => (err as { code?: number }).code === 404;

/** How long the broker may take to answer one inspection step (open, check, get). */
const ANSWER_MS = 10_000;
const answered = <T>(p: Promise<T>, what: string): Promise<T> =>
  within(
    p,
    ANSWER_MS,
    () => new BusUnavailableError(`RabbitMQ did not answer ${what} within ${ANSWER_MS} ms`),
  );

async function onSideChannel<T>(conn: ChannelModel, fn: (ch: Channel) => Promise<T>): Promise<T> {
  const opening = conn.createChannel();
  let ch: Channel;
  try {
    ch = await answered(opening, 'the opening of a channel');
  } catch (err) {
    // opened after all, once the broker reads again: not left open
    opening.then((c) => c.close()).catch(() => undefined);
    throw err;
  }
  ch.on('error', () => undefined);
  let done = false;
  try {
    const out = await fn(ch);
    done = true;
    return out;
  } finally {
    // after a success the close is waited for (browsed messages kept go back with it);
    // after a failure (the broker not answering) it is only asked for
    const closing = ch.close().catch(() => undefined);
    if (done) await answered(closing, 'the closing of a channel').catch(() => undefined);
  }
}

/** Depth and consumers of `queue`; null when it is not declared. */
export function inspectQueue(conn: ChannelModel, queue: string): Promise<QueueInfo | null> {
  return onSideChannel(conn, async (ch) => {
    try {
      const q = await answered(ch.checkQueue(queue), `the check of ${queue}`);
      return { messages: q.messageCount, consumers: q.consumerCount };
    } catch (err) {
      if (notFound(err)) return null;
      throw err;
    }
  });
}

/**
 * Deletes `queue` if it holds no message and has no consumer: `removed`, `absent` when it
 * was never declared, `kept` when the broker kept it for what it still holds.
 */
export function deleteQueueIfEmpty(
  conn: ChannelModel,
  queue: string,
): Promise<'removed' | 'absent' | 'kept'> {
  return onSideChannel(conn, async (ch) => {
    try {
      await answered(ch.checkQueue(queue), `the check of ${queue}`);
    } catch (err) {
      if (notFound(err)) return 'absent';
      throw err;
    }
    try {
      await answered(ch.deleteQueue(queue, { ifEmpty: true, ifUnused: true }), `the removal of ${queue}`);
      return 'removed';
    } catch (err) {
      if (notFound(err)) return 'absent';
      if ((err as { code?: number }).code === 406) return 'kept';
      throw err;
    }
  });
}

/** How long a browse waits, after its channel closed, for the messages it kept to be back. */
const RETURN_WAIT_MS = 2000;
const RETURN_POLL_MS = 20;

/**
 * Takes every message of `queue` once with basic.get (no auto-ack); `visit` says whether
 * to acknowledge it (it was published again, or is to be dropped) or keep it. Kept
 * messages return to the queue when the channel closes, at their old position and with
 * their expiry. Meant for the delay queues, which have no delivery limit (a quorum queue
 * with one counts every return towards it). False when the queue is not declared.
 *
 * A quorum queue takes the kept messages back some time after the close: the browse
 * waits for them (at most RETURN_WAIT_MS; fewer may come back if some fell due
 * meanwhile), so that a browse right after it, or a count, finds them. What it waits
 * for is the queue's depth just before the close, while it still holds them, plus
 * those kept: the depth alone would count what was published into the queue meanwhile
 * (a dead letter `renew`ed as a new copy, a new arrival) as returned already.
 */
export async function browseQueue(
  conn: ChannelModel,
  queue: string,
  visit: (m: BrowsedMessage) => Promise<'ack' | 'keep'>,
): Promise<boolean> {
  let kept = 0;
  /** The messages ready in the queue besides those kept, just before they go back. */
  let others = 0;
  const found = await onSideChannel(conn, async (ch) => {
    let count: number;
    try {
      count = (await answered(ch.checkQueue(queue), `the check of ${queue}`)).messageCount;
    } catch (err) {
      if (notFound(err)) return false;
      throw err;
    }
    for (let i = 0; i < count; i++) {
      const msg = await answered(ch.get(queue, { noAck: false }), `a get from ${queue}`);
      if (!msg) break;
      const headers = (msg.properties.headers ?? {}) as Record<string, unknown>;
      if ((await visit({ body: msg.content, headers })) === 'ack') ch.ack(msg);
      else kept++;
    }
    // a failed count only shortens the wait, to what the depth alone says
    if (kept > 0)
      others = await answered(ch.checkQueue(queue), `the check of ${queue}`).then(
        (q) => q.messageCount,
        () => 0,
      );
    return true;
  });
  const until = Date.now() + RETURN_WAIT_MS;
  while (kept > 0 && Date.now() < until) {
    const ready = (await inspectQueue(conn, queue))?.messages ?? others + kept;
    if (ready >= others + kept) break;
    await new Promise((r) => setTimeout(r, RETURN_POLL_MS));
  }
  return found;
}

/** A quorum queue's counts of a message's deliveries (from RabbitMQ 4.3 `x-delivery-count` counts the failed ones). */
const DELIVERY_COUNTS = ['x-delivery-count', 'x-acquired-count'];

/**
 * What RabbitMQ wrote on a message, which a message published anew must not carry: the
 * record of its dead-lettering, and the count of its deliveries from a quorum queue
 * (every browse of a delay queue adds one). A consumer of `outbound` would take a count
 * carried over for its own redeliveries, and a message browsed often enough for poison.
 */
const BROKER_HEADERS = [
  'x-death',
  'x-first-death-exchange',
  'x-first-death-queue',
  'x-first-death-reason',
  ...DELIVERY_COUNTS,
];

const without = (headers: Record<string, unknown>, names: readonly string[]) => {
  const out = { ...headers };
  for (const h of names) delete out[h];
  return out;
};

/** The headers without the broker's, nor those named in `also`. */
export const withoutBrokerHeaders = (headers: Record<string, unknown>, also: readonly string[] = []) =>
  without(headers, [...BROKER_HEADERS, ...also]);

/** The headers but the delivery counts: the message's dead-lettering record stays. */
export const withoutDeliveryCounts = (headers: Record<string, unknown>) => without(headers, DELIVERY_COUNTS);
