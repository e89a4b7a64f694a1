import { randomUUID } from 'node:crypto';
import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import { Headers } from '@mailyard/contracts';
import type { Logger } from '@mailyard/observability';
import { BusUnavailableError, RpcLostError, RpcTimeoutError } from './errors.js';

/**
 * RabbitMQ's direct reply-to pseudo-queue: the server publishes its answer to the name
 * it finds in `replyTo`, and it reaches the channel the request came from, with no
 * reply queue to declare or clean up.
 */
export const DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to';

export interface RpcAnswer {
  body: Buffer;
  headers: Record<string, unknown>;
}

interface Pending {
  resolve: (a: RpcAnswer) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * The requesting side of RPC on one connection: a plain channel (no confirms: a request
 * is transient and its answer is the acknowledgement) consuming direct reply-to, on
 * which every request of the process is sent. Closed with its connection; requests
 * still waiting then fail with RpcLostError.
 */
export class RpcChannel {
  private readonly pending = new Map<string, Pending>();
  private closed = false;

  private constructor(private readonly ch: Channel) {}

  static async open(conn: ChannelModel, log: Logger, onClose: () => void): Promise<RpcChannel> {
    const ch = await conn.createChannel();
    const rpc = new RpcChannel(ch);
    ch.on('error', (err: Error) => log.warn({ err }, 'RPC channel error'));
    ch.on('close', () => {
      rpc.closed = true;
      rpc.failAll(new RpcLostError('connection to RabbitMQ lost before the answer'));
      onClose();
    });
    // direct reply-to: consume the pseudo-queue (no-ack) before publishing on this channel
    try {
      await ch.consume(DIRECT_REPLY_TO, (msg) => rpc.answer(msg), { noAck: true });
    } catch (err) {
      await ch.close().catch(() => undefined);
      throw err;
    }
    return rpc;
  }

  /** Sends a request to `queue`; resolves with the answer, rejects after `timeoutMs`. */
  send(queue: string, body: Buffer, headers: Record<string, unknown>, timeoutMs: number): Promise<RpcAnswer> {
    if (this.closed) return Promise.reject(new RpcLostError('RPC channel closed'));
    const id = randomUUID();
    return new Promise<RpcAnswer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RpcTimeoutError(`no answer from ${queue} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      try {
        this.ch.sendToQueue(queue, body, {
          replyTo: DIRECT_REPLY_TO,
          correlationId: id,
          persistent: false,
          // nobody waits for an answer after this: the broker drops the request unread
          expiration: String(timeoutMs),
          headers: { ...headers, [Headers.correlationId]: id },
        });
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new BusUnavailableError(`request not sent: ${(err as Error).message}`));
      }
    });
  }

  private answer(msg: ConsumeMessage | null): void {
    if (!msg) return;
    const headers = (msg.properties.headers ?? {}) as Record<string, unknown>;
    const id = (headers[Headers.correlationId] ?? msg.properties.correlationId) as string | undefined;
    const p = id ? this.pending.get(id) : undefined;
    if (!p || !id) return; // answered after its timeout
    this.pending.delete(id);
    clearTimeout(p.timer);
    p.resolve({ body: msg.content, headers });
  }

  private failAll(err: Error): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
      this.pending.delete(id);
    }
  }
}
