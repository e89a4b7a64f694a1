import { randomUUID } from 'node:crypto';
import { connect, type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import {
  POLICY_CORRELATION_HEADER,
  POLICY_REQUEST_HEADER,
  POLICY_VERSION,
  PolicyDecision,
  PolicyRequest,
  Queues,
  type PolicyRequestInput,
} from '@mailyard/contracts';
import { Counter, Gauge, type Logger, type Registry } from '@mailyard/observability';
import { CircuitBreaker, type BreakerState } from './circuit-breaker.js';
import type { PolicyDefaultAction } from './default-action.js';

const REPLY_TO = 'amq.rabbitmq.reply-to';

export interface PolicyClientOptions {
  amqpUrl: string;
  logger: Logger;
  /** Shown in the broker's connection list. */
  name: string;
  /** How long to wait for a decision. */
  timeoutMs: number;
  /** The decision when none arrives in time or the broker is unreachable. */
  defaultAction: PolicyDefaultAction;
  /** Failures in a row that open the circuit, and how long it stays open (default 3, 5 s). */
  breaker?: { threshold: number; openMs: number };
  /** Called with the round-trip time of every request, in seconds (metrics). */
  observe?: (stage: string, seconds: number, outcome: 'answered' | 'timeout' | 'error') => void;
  /** Called when the circuit opens, half-opens or closes, and for every request answered without asking. */
  breakerEvents?: { state(state: BreakerState): void; shortCircuit(): void };
}

interface Pending {
  /** `answered`: false when the request failed without an answer (connection lost). */
  resolve: (d: PolicyDecision, answered?: boolean) => void;
  timer: NodeJS.Timeout;
}

/**
 * Asks services/policy for a decision over RabbitMQ RPC with direct reply-to: no reply
 * queue to declare or clean up, one channel per process. Never throws: a timeout or an
 * unreachable broker yields the default action, so an SMTP session always gets an
 * answer; and while the service keeps not answering, the circuit breaker gives it at once.
 */
export class PolicyClient {
  private conn: ChannelModel | null = null;
  private ch: Channel | null = null;
  private connecting: Promise<Channel> | null = null;
  private pending = new Map<string, Pending>();
  private stopped = false;
  private readonly log: Logger;
  private readonly breaker: CircuitBreaker;

  constructor(private readonly opts: PolicyClientOptions) {
    this.log = opts.logger.child({ component: 'policy-client' });
    this.breaker = new CircuitBreaker({
      ...(opts.breaker ?? { threshold: 3, openMs: 5000 }),
      onChange: (state) => {
        if (state === 'open') this.log.warn('policy service not answering: default action without asking');
        else if (state === 'closed') this.log.info('policy service answering again');
        opts.breakerEvents?.state(state);
      },
    });
  }

  /** closed (asking), open (answering with the default action), half-open (probing). */
  get breakerState(): BreakerState {
    return this.breaker.state;
  }

  /** Connects in the background; ask() also connects on demand. */
  start(): void {
    this.stopped = false;
    this.channel().catch((err: unknown) => this.log.warn({ err }, 'policy RPC channel not ready yet'));
  }

  private fallback(reason: string): PolicyDecision {
    const d = this.opts.defaultAction;
    return PolicyDecision.parse({
      v: POLICY_VERSION,
      ...d,
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
      p.resolve(this.fallback('connection to the broker lost'), false);
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
    if (!this.breaker.allow()) {
      this.opts.breakerEvents?.shortCircuit();
      return this.fallback('policy service not answering (circuit open)');
    }
    let ch: Channel;
    try {
      ch = await this.channel();
    } catch (err) {
      this.breaker.failure();
      this.opts.observe?.(req.stage, seconds(), 'error');
      this.log.warn({ err, sid: req.sessionId }, 'policy service unreachable');
      return this.fallback('broker unreachable');
    }
    const id = randomUUID();
    return new Promise<PolicyDecision>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.breaker.failure();
        this.opts.observe?.(req.stage, seconds(), 'timeout');
        this.log.warn({ sid: req.sessionId, stage: req.stage }, 'policy service did not answer in time');
        resolve(this.fallback('timeout'));
      }, timeoutMs);
      this.pending.set(id, {
        timer,
        resolve: (d, answered = true) => {
          if (answered) this.breaker.success();
          else this.breaker.failure();
          this.opts.observe?.(req.stage, seconds(), answered ? 'answered' : 'error');
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
        this.breaker.failure();
        this.opts.observe?.(req.stage, seconds(), 'error');
        this.log.warn({ err, sid: req.sessionId }, 'policy request not sent');
        resolve(this.fallback('publish failed'));
      }
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.resolve(this.fallback('client stopped'), false);
      this.pending.delete(id);
    }
    const conn = this.conn;
    this.conn = null;
    this.ch = null;
    if (conn) await conn.close().catch(() => undefined);
  }
}

/** The config a listener (mta-inbound, msa) builds its policy client from. */
export interface PolicyClientConfig {
  amqp_url: string;
  policy_timeout: number;
  smtpd_policy_service_default_action: PolicyDefaultAction;
  policy_breaker_threshold: number;
  policy_breaker_open_time: number;
}

const BREAKER_STATES = ['closed', 'open', 'half-open'] as const satisfies BreakerState[];

/**
 * The policy client of a listener, with its circuit breaker's metrics:
 * `mailyard_<service>_policy_breaker_state{state}` (1 for the current state) and
 * `mailyard_<service>_policy_short_circuits_total`.
 */
export function createPolicyClient(
  service: string,
  config: PolicyClientConfig,
  deps: { logger: Logger; registry: Registry; observe?: PolicyClientOptions['observe'] },
): PolicyClient {
  const prefix = `mailyard_${service.replace(/-/g, '_')}_policy`;
  const state = new Gauge({
    name: `${prefix}_breaker_state`,
    help: 'Policy RPC circuit breaker: 1 for the current state (closed: asking; open: default action without asking; half-open: one request probing)',
    labelNames: ['state'] as const,
    registers: [deps.registry],
  });
  const shortCircuits = new Counter({
    name: `${prefix}_short_circuits_total`,
    help: 'Policy requests answered with smtpd_policy_service_default_action at once, the circuit being open',
    registers: [deps.registry],
  });
  const setState = (current: BreakerState) => {
    for (const s of BREAKER_STATES) state.set({ state: s }, s === current ? 1 : 0);
  };
  setState('closed');
  return new PolicyClient({
    amqpUrl: config.amqp_url,
    logger: deps.logger,
    name: `mailyard-${service}-policy`,
    timeoutMs: config.policy_timeout,
    defaultAction: config.smtpd_policy_service_default_action,
    breaker: { threshold: config.policy_breaker_threshold, openMs: config.policy_breaker_open_time },
    ...(deps.observe ? { observe: deps.observe } : {}),
    breakerEvents: { state: setState, shortCircuit: () => shortCircuits.inc() },
  });
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
