import { randomUUID } from 'node:crypto';
import { connect, type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import {
  POLICY_CORRELATION_HEADER,
  POLICY_REQUEST_HEADER,
  POLICY_VERSION,
  PolicyDecision,
  PolicyRequest,
  Queues,
  type PolicyReply,
  type PolicyRequestInput,
} from '@mailyard/contracts';
import type { Logger } from '@mailyard/observability';

const REPLY_TO = 'amq.rabbitmq.reply-to';

export interface PolicyClientOptions {
  amqpUrl: string;
  logger: Logger;
  /** Shown in the broker's connection list. */
  name: string;
  /** How long to wait for a decision. */
  timeoutMs: number;
  /** What to do when no decision arrives in time (or the broker is unreachable). */
  onTimeout: 'tempfail' | 'continue';
  /** Reply used for `tempfail` on timeout (default 451 4.7.1). */
  timeoutReply?: PolicyReply;
  /** Called with the round-trip time of every answered request, in seconds (metrics). */
  observe?: (stage: string, seconds: number, outcome: 'answered' | 'timeout' | 'error') => void;
}

interface Pending {
  resolve: (d: PolicyDecision) => void;
  timer: NodeJS.Timeout;
}

/**
 * Asks services/policy for a decision over RabbitMQ RPC with direct reply-to: no reply
 * queue to declare or clean up, one channel per process. Never throws: a timeout or
 * an unreachable broker yields the configured fallback decision, so an SMTP session
 * always gets an answer.
 */
export class PolicyClient {
  private conn: ChannelModel | null = null;
  private ch: Channel | null = null;
  private connecting: Promise<Channel> | null = null;
  private pending = new Map<string, Pending>();
  private stopped = false;
  private readonly log: Logger;

  constructor(private readonly opts: PolicyClientOptions) {
    this.log = opts.logger.child({ component: 'policy-client' });
  }

  /** Connects in the background; ask() also connects on demand. */
  start(): void {
    this.stopped = false;
    this.channel().catch((err: unknown) => this.log.warn({ err }, 'policy RPC channel not ready yet'));
  }

  private fallback(reason: string): PolicyDecision {
    if (this.opts.onTimeout === 'continue') {
      return PolicyDecision.parse({
        v: POLICY_VERSION,
        action: 'continue',
        reasons: [{ check: 'policy_service', result: 'unavailable', detail: reason }],
      });
    }
    return PolicyDecision.parse({
      v: POLICY_VERSION,
      action: 'tempfail',
      reply: this.opts.timeoutReply ?? {
        code: 451,
        enhanced: '4.7.1',
        text: 'Service temporarily unavailable: policy check did not answer, try again later',
      },
      reasons: [{ check: 'policy_service', result: 'unavailable', detail: reason }],
    });
  }

  private channel(): Promise<Channel> {
    if (this.ch) return Promise.resolve(this.ch);
    this.connecting ??= this.open().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  private async open(): Promise<Channel> {
    const u = new URL(this.opts.amqpUrl);
    if (!u.searchParams.has('heartbeat')) u.searchParams.set('heartbeat', '10');
    const conn = await connect(u.toString(), {
      noDelay: true,
      timeout: Math.max(1000, this.opts.timeoutMs),
      clientProperties: { connection_name: this.opts.name },
    });
    conn.on('error', (err: Error) => this.log.warn({ err }, 'policy RPC connection error'));
    conn.on('close', () => this.lost(conn));
    const ch = await conn.createChannel();
    ch.on('error', (err: Error) => this.log.warn({ err }, 'policy RPC channel error'));
    ch.on('close', () => this.lost(conn));
    // direct reply-to: consume the pseudo-queue (no-ack) before publishing on this channel
    await ch.consume(REPLY_TO, (msg) => this.onReply(msg), { noAck: true });
    this.conn = conn;
    this.ch = ch;
    return ch;
  }

  private lost(conn: ChannelModel): void {
    if (this.conn !== conn) return;
    this.conn = null;
    this.ch = null;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.resolve(this.fallback('connection to the broker lost'));
      this.pending.delete(id);
    }
    void conn.close().catch(() => undefined);
  }

  private onReply(msg: ConsumeMessage | null): void {
    if (!msg) return;
    const id = (msg.properties.headers?.[POLICY_CORRELATION_HEADER] ?? msg.properties.correlationId) as
      string | undefined;
    const p = id ? this.pending.get(id) : undefined;
    if (!p || !id) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    try {
      p.resolve(PolicyDecision.parse(JSON.parse(msg.content.toString())));
    } catch (err) {
      this.log.warn({ err }, 'policy service sent an invalid decision');
      p.resolve(this.fallback('invalid decision'));
    }
  }

  /** Asks for a decision; `message` is the raw message at the data stage. */
  async ask(
    request: Omit<PolicyRequestInput, 'v'>,
    message?: Buffer,
    timeoutMs = this.opts.timeoutMs,
  ): Promise<PolicyDecision> {
    const req = PolicyRequest.parse({ ...request, v: POLICY_VERSION });
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    if (this.stopped) return this.fallback('client stopped');
    let ch: Channel;
    try {
      ch = await this.channel();
    } catch (err) {
      this.opts.observe?.(req.stage, seconds(), 'error');
      this.log.warn({ err, sid: req.sessionId }, 'policy service unreachable');
      return this.fallback('broker unreachable');
    }
    const id = randomUUID();
    return new Promise<PolicyDecision>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.opts.observe?.(req.stage, seconds(), 'timeout');
        this.log.warn({ sid: req.sessionId, stage: req.stage }, 'policy service did not answer in time');
        resolve(this.fallback('timeout'));
      }, timeoutMs);
      this.pending.set(id, {
        timer,
        resolve: (d) => {
          this.opts.observe?.(req.stage, seconds(), 'answered');
          resolve(d);
        },
      });
      try {
        ch.sendToQueue(Queues.policy, message ?? Buffer.alloc(0), {
          replyTo: REPLY_TO,
          correlationId: id,
          persistent: false,
          expiration: String(timeoutMs),
          headers: { [POLICY_REQUEST_HEADER]: JSON.stringify(req), [POLICY_CORRELATION_HEADER]: id },
        });
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(id);
        this.opts.observe?.(req.stage, seconds(), 'error');
        resolve(this.fallback(`publish failed: ${String(err)}`));
      }
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.resolve(this.fallback('client stopped'));
      this.pending.delete(id);
    }
    const conn = this.conn;
    this.conn = null;
    this.ch = null;
    if (conn) await conn.close().catch(() => undefined);
  }
}

/** Applies a data-stage decision's header edits to a raw message (header block only). */
export function applyHeaderEdits(
  message: Buffer,
  edits: {
    headers: { name: string; value: string }[];
    removeHeaders: { name: string; valuePrefix?: string }[];
  },
): Buffer {
  if (!edits.headers.length && !edits.removeHeaders.length) return message;
  let body = message;
  if (edits.removeHeaders.length) {
    const end = headerEnd(message);
    const head = message.subarray(0, end).toString('latin1');
    const fields = head.split(/\r\n(?![ \t])/);
    const kept = fields.filter((f) => {
      const colon = f.indexOf(':');
      if (colon <= 0) return true;
      const name = f.slice(0, colon).trim().toLowerCase();
      const value = f
        .slice(colon + 1)
        .replace(/\r\n[ \t]+/g, ' ')
        .trim()
        .toLowerCase();
      return !edits.removeHeaders.some(
        (r) =>
          r.name.toLowerCase() === name &&
          (r.valuePrefix === undefined || isIdPrefix(value, r.valuePrefix.toLowerCase())),
      );
    });
    body = Buffer.concat([Buffer.from(kept.join('\r\n'), 'latin1'), message.subarray(end)]);
  }
  const added = edits.headers.map((h) => `${h.name}: ${h.value}\r\n`).join('');
  return Buffer.concat([Buffer.from(added), body]);
}

/** `value` starts with the authserv-id `id` followed by `;`, white space or the end (RFC 8601 §2.2). */
function isIdPrefix(value: string, id: string): boolean {
  if (!value.startsWith(id)) return false;
  const next = value[id.length];
  return next === undefined || next === ';' || next === ' ' || next === '\t';
}

/** Offset of the blank line ending the header block (the body starts after it). */
function headerEnd(message: Buffer): number {
  const i = message.indexOf('\r\n\r\n');
  return i === -1 ? message.length : i;
}
