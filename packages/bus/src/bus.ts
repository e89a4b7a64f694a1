import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage } from 'amqplib';
import {
  ContractError,
  DEAD_LETTER_EXCHANGE,
  DEAD_LETTERED_EVENT_PREFIX,
  EVENTS_EXCHANGE,
  Events,
  Headers,
  MAIL_EXCHANGE,
  MailMessages,
  RoutingKeys,
  envelopeFor,
  eventType,
  parsePayload,
  type Envelope,
  type EventInput,
  type EventKey,
  type EventPayload,
  type MailMessageType,
  type MailRoutingKey,
  type RpcReply,
  type RpcRequest,
  type RpcRequestInput,
  type RpcType,
} from '@mailyard/contracts';
import type { z } from 'zod';
import type { Logger } from '@mailyard/observability';
import {
  BackendUnavailableError,
  BusUnavailableError,
  PoisonMessageError,
  RpcReplyError,
  UnroutableError,
} from './errors.js';
import { within } from '@mailyard/config';
import {
  browseQueue,
  deleteQueueIfEmpty,
  inspectQueue,
  withoutBrokerHeaders,
  withoutDeliveryCounts,
} from './inspect.js';
import { RpcChannel } from './rpc.js';
import { declareQueue, declareTopology, delayQueueSpec, type QueueSpec } from './topology.js';

export interface PublishItem {
  exchange?: string;
  routingKey: string;
  body: Buffer;
  headers?: Record<string, unknown>;
  /** Persistent unless false (events are transient). */
  persistent?: boolean;
  /** Delivered to the queue only if it is not consumed within this many ms (delay queues). */
  expiration?: number;
  /** Returned (and the publish rejected as unroutable) when no queue takes it; true unless false. */
  mandatory?: boolean;
}

export interface Delivery {
  body: Buffer;
  headers: Record<string, unknown>;
  /** How many times the broker delivered this message before (quorum queues count returns). */
  redeliveries: number;
  routingKey: string;
  /** Where an RPC request wants its answer (direct reply-to), and the id to answer with. */
  replyTo?: string;
  correlationId?: string;
  /** The sender's `expiration` in ms: for an RPC request, how long its requester waits. */
  expiration?: number;
}

/** A queue's depth and consumers, as a passive declare reports them. */
export interface QueueInfo {
  /** Messages ready (not counting those delivered and not yet acknowledged). */
  messages: number;
  consumers: number;
}

/** Where `republish` sends a message other than to a mail queue. */
export interface RepublishTarget {
  exchange: string;
  routingKey: string;
  /** Default true. */
  persistent?: boolean;
}

/** A message taken from a queue by `browse`. */
export interface BrowsedMessage {
  body: Buffer;
  headers: Record<string, unknown>;
}

export interface ConsumeOptions {
  prefetch: number;
  /** After this many failed attempts the message goes to the dead-letter queue with the reason. */
  maxAttempts: number;
  /** Pause before a failed message is returned to the queue, grows with the attempt count. */
  retryDelayMs?: number;
}

export interface BusOptions {
  url: string;
  logger: Logger;
  /** Shown in the broker's connection list. */
  name: string;
  /** A confirm that has not arrived after this long counts as the broker being unavailable. */
  publishTimeoutMs?: number;
  /**
   * How long the broker may take, once it accepted the connection, to answer everything
   * the bus sets up on it (topology, channels, consumers); past it the connection is
   * dropped and made again. Default 30 s.
   */
  setupTimeoutMs?: number;
  /** Events: called with true/false when the connection comes up or goes down. */
  onStateChange?: (connected: boolean) => void;
  /**
   * At stop, how long handlers in flight may finish; what is not finished by then goes
   * back to its queue unacknowledged (redelivered elsewhere). Unbounded when unset.
   */
  drainMs?: number;
  /**
   * Declare the topology at connect (default). A tool that only inspects (the `mailyard
   * queue` commands) passes false: the services own the topology.
   */
  declareTopology?: boolean;
}

interface ConsumerReg {
  queue: string;
  handler: (d: Delivery) => Promise<void>;
  opts: ConsumeOptions;
  channel?: Channel;
  acks?: AckBatcher;
  tag?: string;
  /** Handlers running for deliveries of the current channel. */
  runs?: Set<Promise<void>>;
  exclusiveBinding?: { exchange: string; pattern: string };
}

interface Pending {
  resolve: () => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * What the recipients of one message may take in its envelope. The envelope travels as a
 * JSON header, and amqplib encodes a message's headers in a 64 KiB buffer: a publish past
 * it fails, every time. The rest of an envelope (sender, client, the last error of a
 * retry) stays well within the 8 KiB left.
 */
export const MAX_ENVELOPE_RECIPIENT_BYTES = 56 * 1024;

/** The bytes one recipient takes in an envelope's list: a JSON string and its comma. */
export function envelopeAddressBytes(address: string): number {
  return Buffer.byteLength(JSON.stringify(address)) + 1;
}

/**
 * The bytes the recipients take in the envelope `publishMailRouted` writes, from what the
 * addresses of each route take (envelopeAddressBytes): twice when the message has local
 * and remote recipients both (`recipients` and `routes`), and the local ones once more
 * when a policy verdict may list them for Junk (`filing.junk`). Kept as sums, so that
 * checking one more recipient does not cost as much as all before it.
 */
export function envelopeRecipientBytes(
  bytes: { delivery: number; outbound: number },
  opts: { filing: boolean },
): number {
  const sum = bytes.delivery + bytes.outbound;
  return (bytes.delivery && bytes.outbound ? 2 * sum : sum) + (opts.filing ? bytes.delivery : 0);
}

/**
 * `recipients` cut, in their order, into lists that each fit in one envelope
 * (MAX_ENVELOPE_RECIPIENT_BYTES): for a message made for more recipients than one
 * envelope takes (an alias with many members outside our domains), one message per list.
 */
export function envelopeParts(recipients: readonly string[]): string[][] {
  const parts: string[][] = [];
  let part: string[] = [];
  let bytes = 0;
  for (const r of recipients) {
    const b = envelopeAddressBytes(r);
    if (part.length && bytes + b > MAX_ENVELOPE_RECIPIENT_BYTES) {
      parts.push(part);
      part = [];
      bytes = 0;
    }
    part.push(r);
    bytes += b;
  }
  if (part.length) parts.push(part);
  return parts;
}

/** Hides the password in a broker URL for log lines and error messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString().replace(/\/$/, '');
  } catch {
    return '(invalid url)';
  }
}

/**
 * Set while a consumer's handler runs: its message is held (unacknowledged) for as long as
 * the handler takes, so a publish it makes may wait out a resource alarm (see publish).
 */
const handling = new AsyncLocalStorage<true>();

/** How long a service that has never connected retries quietly before it warns. */
const STARTUP_QUIET_MS = 10_000;
const SETUP_TIMEOUT_MS = 30_000;
/**
 * How long closing a connection, or cancelling the consumers at stop, waits for the broker
 * when no deadline was set (closeBy).
 */
const CLOSE_TIMEOUT_MS = 5000;

/**
 * One AMQP connection per process: a confirm channel for publishing (many publishes
 * in flight, each resolved by its own confirm), a channel per consumer, one for RPC
 * requests once there is one, and short-lived ones for declarations and inspection.
 * Reconnects with backoff after the broker restarts and re-attaches every consumer.
 * The typed methods (mail, events, call/serve) take the catalogue's entries from
 * @mailyard/contracts and validate what they consume against them.
 */
export class Bus {
  private conn: ChannelModel | null = null;
  private pub: ConfirmChannel | null = null;
  private consumers: ConsumerReg[] = [];
  private pending = new Map<string, Pending>();
  private returned = new Set<string>();
  private stopping = false;
  /** The stop under way or done (until the next start). */
  private stopped: Promise<void> | null = null;
  /** When the stop has the connection gone by (closeBy), in ms since the epoch. */
  private closeDeadline: number | undefined;
  private connecting: Promise<void> | null = null;
  private inFlight = new Set<Promise<void>>();
  private waiters: (() => void)[] = [];
  private warnedDown = false;
  /** Set at the first successful connect: before it, a broker still starting is expected. */
  private connectedOnce = false;
  /** Queues declared besides the topology (the delay queues of a schedule), again at every connect. */
  private extraQueues = new Map<string, QueueSpec>();
  /** This connection's RPC channel, opened at the first request. */
  private rpc: { conn: ChannelModel; channel: Promise<RpcChannel> } | null = null;
  private readonly log: Logger;

  private readonly held = new Map<string, number>();

  constructor(private readonly opts: BusOptions) {
    this.log = opts.logger.child({ component: 'bus' });
  }

  get connected(): boolean {
    return this.pub !== null;
  }

  /** Every registered consumer is attached to its queue (true when there are none). */
  get consuming(): boolean {
    return this.consumers.every((c) => c.tag !== undefined);
  }

  private unreachable(): BusUnavailableError {
    return new BusUnavailableError(`RabbitMQ unreachable at ${redactUrl(this.opts.url)}`);
  }

  /** The connection, when it is up with its publish channel; else BusUnavailableError. */
  private connection(): ChannelModel {
    if (!this.conn || !this.pub) throw this.unreachable();
    return this.conn;
  }

  // ---- inspection (readiness, metrics, `mailyard queue`) ----

  /** Depth and consumers of `queue` now (a passive declare); null when it is not declared. */
  async inspectQueue(queue: string): Promise<QueueInfo | null> {
    return inspectQueue(this.connection(), queue);
  }

  /**
   * Deletes `queue` if it is empty and unused (`removed`; `absent` if it was not declared,
   * `kept` if the broker kept it). Rejects when not connected.
   */
  async deleteQueueIfEmpty(queue: string): Promise<'removed' | 'absent' | 'kept'> {
    return deleteQueueIfEmpty(this.connection(), queue);
  }

  /** How many consumers `queue` has now (0 when it is not declared). Rejects when not connected. */
  async consumerCount(queue: string): Promise<number> {
    return (await this.inspectQueue(queue))?.consumers ?? 0;
  }

  /**
   * Takes every message of `queue` once; `visit` says whether to acknowledge it (done
   * with: published again or dropped) or keep it in place, with its expiry. For the delay
   * queues. False when the queue is not declared.
   */
  async browse(queue: string, visit: (m: BrowsedMessage) => Promise<'ack' | 'keep'>): Promise<boolean> {
    return browseQueue(this.connection(), queue, visit);
  }

  /**
   * Publishes a browsed message again, as a new message: to `routingKey` on `mail` (a
   * mail message), or to another exchange (an event, persistent unless said otherwise),
   * without what the broker wrote on it (dead-lettering, deliveries) nor the headers in
   * `drop`; resolves when confirmed, rejects as unroutable when no queue took it.
   */
  republish(
    m: BrowsedMessage,
    to: MailRoutingKey | RepublishTarget,
    drop: readonly string[] = [],
  ): Promise<void> {
    const target = typeof to === 'string' ? { routingKey: to } : to;
    return this.publish({ ...target, body: m.body, headers: withoutBrokerHeaders(m.headers, drop) });
  }

  /**
   * Publishes a browsed message back into `queue` (through the default exchange), with
   * its headers and the broker's record of its dead-lettering but not its delivery
   * counts; resolves when confirmed. For a quorum queue with a delivery limit that a
   * reader's returns count towards (RabbitMQ 4.0 to 4.2 count every return, and give
   * every quorum queue a limit of 20): the copy starts from nought, and the reader acks
   * the original.
   */
  renew(m: BrowsedMessage, queue: string): Promise<void> {
    return this.publish({
      exchange: '',
      routingKey: queue,
      body: m.body,
      headers: withoutDeliveryCounts(m.headers),
    });
  }

  /**
   * Declares queues besides the topology (the delay queues of a relay's or delivery's
   * schedule), now when connected and again at every connect.
   */
  async declareQueues(specs: QueueSpec[]): Promise<void> {
    for (const q of specs) this.extraQueues.set(q.name, q);
    if (!this.conn || !this.pub) return;
    const ch = await this.conn.createChannel();
    ch.on('error', () => undefined);
    try {
      for (const q of specs) await declareQueue(ch, q);
    } finally {
      await ch.close().catch(() => undefined);
    }
  }

  /**
   * Why RabbitMQ refuses publishes right now (a memory or disk alarm: `Connection.Blocked`),
   * or null. A publish meanwhile fails at once instead of waiting for a confirm that
   * cannot come; the SMTP services refuse new mail with 452 4.3.1 while it lasts.
   */
  get blocked(): string | null {
    return this.blockedReason;
  }

  private blockedReason: string | null = null;

  /** Why a publish cannot be made now (no connection, or the broker blocks publishers), or null. */
  private publishRefusal(): BusUnavailableError | null {
    if (!this.pub) return this.unreachable();
    if (this.blockedReason)
      return new BusUnavailableError(`RabbitMQ refuses publishing: ${this.blockedReason}`);
    return null;
  }

  /** Starts connecting in the background; resolves at once. */
  start(): void {
    this.stopping = false;
    this.stopped = null;
    this.closeDeadline = undefined;
    void this.ensureConnecting();
  }

  /** Resolves when connected, or rejects after `timeoutMs`. */
  waitConnected(timeoutMs = 10_000): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        reject(this.unreachable());
      }, timeoutMs);
      const done = () => {
        clearTimeout(t);
        resolve();
      };
      this.waiters.push(done);
    });
  }

  private ensureConnecting(): Promise<void> {
    this.connecting ??= this.connectLoop().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  private async connectLoop(): Promise<void> {
    let delay = 100;
    const since = Date.now();
    while (!this.stopping) {
      try {
        await this.connectOnce();
        // the first connection is part of starting (the service's "started" line says so);
        // a reconnection is news
        this.log[this.connectedOnce ? 'info' : 'debug'](
          { url: redactUrl(this.opts.url) },
          'connected to RabbitMQ',
        );
        this.connectedOnce = true;
        this.warnedDown = false;
        this.opts.onStateChange?.(true);
        for (const w of this.waiters.splice(0)) w();
        return;
      } catch (err) {
        await this.teardown();
        // at start the broker may still be starting too (pnpm start, compose): quiet for a while
        const starting = !this.connectedOnce && Date.now() - since < STARTUP_QUIET_MS;
        if (!this.warnedDown && !starting) {
          this.log.warn({ url: redactUrl(this.opts.url), err }, 'RabbitMQ unreachable, retrying');
          this.warnedDown = true;
        } else if (starting) {
          this.log.debug({ url: redactUrl(this.opts.url), err }, 'RabbitMQ not reachable yet, retrying');
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  private async connectOnce(): Promise<void> {
    const u = new URL(this.opts.url);
    if (!u.searchParams.has('heartbeat')) u.searchParams.set('heartbeat', '10');
    // imported at the first connection: a `mailyard` command that never connects (most of
    // them) does not load it
    const { connect } = await import('amqplib');
    // Without TCP no-delay a confirmed publish waits ~40 ms for Nagle + delayed ACK.
    const conn = await connect(u.toString(), {
      noDelay: true,
      timeout: 5000,
      clientProperties: { connection_name: this.opts.name },
    });
    this.conn = conn;
    conn.on('error', (err: Error) => this.log.warn({ err }, 'RabbitMQ connection error'));
    conn.on('close', () => this.onConnectionLost(conn));
    this.blockedReason = null;
    conn.on('blocked', (reason: string) => {
      if (this.conn !== conn) return;
      this.blockedReason = reason || 'resource alarm';
      this.log.warn({ reason }, 'RabbitMQ blocked publishing');
    });
    conn.on('unblocked', () => {
      if (this.conn !== conn) return;
      this.blockedReason = null;
      this.log.info('RabbitMQ accepts publishing again');
    });
    // amqplib waits for an answer for ever: a broker that stalls on one (its heartbeats
    // still arriving) would leave the service unready, without a word, until restarted
    const stalled = setTimeout(() => {
      this.log.warn(
        { url: redactUrl(this.opts.url) },
        'RabbitMQ did not finish setting up the connection in time, connecting again',
      );
      dropConnection(conn);
    }, this.opts.setupTimeoutMs ?? SETUP_TIMEOUT_MS);
    try {
      await this.setUp(conn);
    } finally {
      clearTimeout(stalled);
    }
  }

  /** Topology, publish channel and consumers on a new connection. */
  private async setUp(conn: ChannelModel): Promise<void> {
    // A failed declaration closes its channel, so declare on a throwaway one.
    if (this.opts.declareTopology !== false) {
      const setup = await conn.createChannel();
      await declareTopology(setup);
      await setup.close();
    }
    if (this.extraQueues.size) {
      // not fatal: a publish to a queue that is missing declares it again (publishDelayed)
      const setup = await conn.createChannel();
      setup.on('error', () => undefined);
      try {
        for (const q of this.extraQueues.values()) await declareQueue(setup, q);
      } catch (err) {
        this.log.warn({ err }, 'could not declare queues beyond the topology');
      } finally {
        await setup.close().catch(() => undefined);
      }
    }
    const pub = await conn.createConfirmChannel();
    pub.on('error', (err: Error) => this.log.warn({ err }, 'publish channel error'));
    pub.on('close', () => {
      if (this.pub === pub) {
        this.pub = null;
        this.failPending(new BusUnavailableError('publish channel closed'));
        if (!this.stopping) void conn.close().catch(() => undefined);
      }
    });
    pub.on('return', (msg: ConsumeMessage) => {
      const id = msg.properties.messageId as string | undefined;
      if (id) this.returned.add(id);
    });
    for (const c of this.consumers) await this.attach(conn, c);
    // dropped meanwhile (setupTimeoutMs): what was set up belongs to a closed connection
    if (this.conn !== conn) throw new BusUnavailableError('connection dropped while it was set up');
    this.pub = pub;
  }

  private onConnectionLost(conn: ChannelModel): void {
    if (this.conn !== conn) return;
    this.conn = null;
    this.pub = null;
    // an outage, not an alarm: "unreachable" is the truth until the next connection says otherwise
    this.blockedReason = null;
    for (const c of this.consumers) {
      c.channel = undefined;
      c.tag = undefined;
    }
    this.failPending(new BusUnavailableError('connection to RabbitMQ lost'));
    this.opts.onStateChange?.(false);
    if (!this.stopping) {
      this.log.warn({ url: redactUrl(this.opts.url) }, 'connection to RabbitMQ lost, reconnecting');
      void this.ensureConnecting();
    }
  }

  private failPending(err: Error): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
      this.pending.delete(id);
    }
  }

  /** Closes the connection, waiting for the broker's answer until `by` (default: CLOSE_TIMEOUT_MS from now). */
  private async teardown(by = Date.now() + CLOSE_TIMEOUT_MS): Promise<void> {
    const conn = this.conn;
    this.conn = null;
    this.pub = null;
    if (!conn) return;
    // the close handshake needs the broker's answer: one that does not answer is cut off
    const wait = by - Date.now();
    if (wait <= 0 || !(await settlesWithin(conn.close(), wait))) dropConnection(conn);
  }

  /**
   * Publishes with persistence, mandatory routing and a publisher confirm.
   *
   * RabbitMQ (3.x) tells a connection of a resource alarm only when it publishes: the
   * first publish after the alarm went off is sent, and then held unread in the broker
   * until the alarm ends, when it is queued and confirmed. Given up on meanwhile, it is
   * queued all the same. A publish of a consumer's handler (a DSN, a forward, a retry)
   * therefore waits for that confirm while the connection is blocked: its message is
   * held meanwhile anyway, and given up on, the message would run again after the alarm
   * and publish a second copy (two bounces to the sender, two forwards). Any other
   * publish (an SMTP client waiting at the end of DATA) is given up on after
   * publishTimeoutMs, blocked or not.
   */
  publish(item: PublishItem): Promise<void> {
    const refusal = this.publishRefusal();
    if (refusal) return Promise.reject(refusal);
    const pub = this.pub!;
    const messageId = randomUUID();
    const waitsOutAlarm = handling.getStore() === true;
    const timeoutMs = this.opts.publishTimeoutMs ?? 15_000;
    return new Promise<void>((resolve, reject) => {
      const expire = () => {
        const p = this.pending.get(messageId);
        if (!p) return;
        // the confirm comes when the alarm ends, and a connection lost meanwhile fails it;
        // a stop waits no longer than before
        if (waitsOutAlarm && this.blockedReason && this.pub === pub && !this.stopping) {
          p.timer = setTimeout(expire, timeoutMs);
          return;
        }
        this.pending.delete(messageId);
        reject(new BusUnavailableError('RabbitMQ did not confirm the message in time'));
      };
      const timer = setTimeout(expire, timeoutMs);
      this.pending.set(messageId, { resolve, reject, timer });
      try {
        pub.publish(
          item.exchange ?? MAIL_EXCHANGE,
          item.routingKey,
          item.body,
          {
            persistent: item.persistent ?? true,
            mandatory: item.mandatory ?? true,
            messageId,
            headers: item.headers ?? {},
            ...(item.expiration !== undefined ? { expiration: String(item.expiration) } : {}),
          },
          (err: unknown) => {
            const p = this.pending.get(messageId);
            if (!p) return;
            this.pending.delete(messageId);
            clearTimeout(p.timer);
            if (err)
              return p.reject(
                new BusUnavailableError(
                  `RabbitMQ refused the message: ${err instanceof Error ? err.message : 'nack'}`,
                ),
              );
            if (this.returned.delete(messageId))
              return p.reject(new UnroutableError(`no queue bound for ${item.routingKey}`));
            p.resolve();
          },
        );
      } catch (err) {
        this.pending.delete(messageId);
        clearTimeout(timer);
        reject(new BusUnavailableError(`publish failed: ${(err as Error).message}`));
      }
    });
  }

  /** Publishes several messages; resolves only when every one is confirmed. */
  async publishAll(items: PublishItem[]): Promise<void> {
    await Promise.all(items.map((i) => this.publish(i)));
  }

  // ---- mail messages (catalogue: MailMessages) ----

  /** A mail message: raw RFC 5322 bytes as the body, the envelope as a JSON header. */
  private mailItem(routingKey: string, body: Buffer, envelope: Envelope): PublishItem {
    return {
      routingKey,
      body,
      headers: {
        [MailMessages.delivery.header]: JSON.stringify(envelope),
        [MailMessages.delivery.versionHeader]: envelope.v,
      },
    };
  }

  /** Publishes a mail message to `delivery` or `outbound`; resolves when confirmed. */
  publishMail(routingKey: MailRoutingKey, body: Buffer, envelope: Envelope): Promise<void> {
    return this.publish(this.mailItem(routingKey, body, envelope));
  }

  /**
   * Publishes one message for local and remote recipients at once (see
   * `envelopeRecipientBytes` for how many fit): a single AMQP message
   * routed to `delivery` and, through the BCC header (RabbitMQ's sender-selected
   * distribution), to `outbound` as well, so one confirm covers both queues and a
   * partial failure cannot leave one copy queued while the client is told to retry.
   */
  publishMailRouted(
    body: Buffer,
    envelope: Envelope,
    routes: { delivery: string[]; outbound: string[] },
  ): Promise<void> {
    const local = routes.delivery.length > 0;
    const remote = routes.outbound.length > 0;
    if (!local || !remote) {
      return this.publishMail(local ? RoutingKeys.delivery : RoutingKeys.outbound, body, {
        ...envelope,
        recipients: local ? routes.delivery : routes.outbound,
      });
    }
    const env: Envelope = { ...envelope, recipients: [...routes.delivery, ...routes.outbound], routes };
    const item = this.mailItem(RoutingKeys.delivery, body, env);
    return this.publish({ ...item, headers: { ...item.headers, BCC: [RoutingKeys.outbound] } });
  }

  /**
   * Publishes a deferred message to the delay queue of `delayMs` in front of `target`
   * (`outbound.retry.<d>`, `delivery.retry.<d>`), where it waits out the delay and goes
   * back to `target`. A delay queue the broker has lost is declared again and the publish
   * repeated.
   */
  async publishDelayed(
    delayMs: number,
    body: Buffer,
    envelope: Envelope,
    target: MailRoutingKey = RoutingKeys.outbound,
  ): Promise<void> {
    const spec = delayQueueSpec(target, delayMs);
    const item = this.mailItem(spec.name, body, envelope);
    try {
      await this.publish(item);
    } catch (err) {
      if (!(err instanceof UnroutableError)) throw err;
      await this.declareQueues([spec]);
      await this.publish(item);
    }
  }

  /**
   * Consumes a mail queue: every envelope is validated against the catalogue entry and
   * narrowed to this queue's recipients (`envelopeFor`) before `handler` sees it; one that
   * fails is dead-lettered at once as poison. Attempts default to the entry's policy.
   */
  async consumeMail(
    type: MailMessageType,
    handler: (envelope: Envelope, d: Delivery) => Promise<void>,
    opts: Omit<ConsumeOptions, 'maxAttempts'> & { maxAttempts?: number },
  ): Promise<void> {
    await this.consume(
      type.queue,
      async (d) => {
        let env: Envelope;
        try {
          env = envelopeFor(parsePayload(type.schema, d.headers[type.header], 'envelope'), type.queue);
        } catch (err) {
          if (err instanceof ContractError) throw new PoisonMessageError(err.message);
          throw err;
        }
        await handler(env, d);
      },
      { ...opts, maxAttempts: opts.maxAttempts ?? type.failure.maxAttempts },
    );
  }

  // ---- events (catalogue: Events) ----

  /**
   * Publishes an event (best effort, not persistent: events describe state already on
   * disk). The payload is checked against the catalogue here too, so one forced past the
   * compiler fails its publisher, not every subscriber.
   */
  async publishEvent<K extends EventKey>(key: K, payload: EventInput<K>): Promise<void> {
    // under a resource alarm RabbitMQ stops reading a connection that publishes, and the
    // acks of its consumers would wait behind the event
    const refusal = this.publishRefusal();
    if (refusal) throw refusal;
    const body = parsePayload(Events[key].schema, payload, `${key} event`);
    this.pub!.publish(EVENTS_EXCHANGE, key, Buffer.from(JSON.stringify(body)), {
      persistent: false,
      contentType: 'application/json',
    });
  }

  /**
   * Subscribes to events with a private, auto-deleted queue: every subscriber (every
   * instance of a service) sees every event. Each payload is validated against the
   * catalogue entry of its routing key first; one that fails, or whose key the catalogue
   * does not know, is dead-lettered with the reason instead of handed over.
   */
  async subscribe<K extends EventKey>(
    key: K,
    handler: (payload: EventPayload<K>, key: K) => Promise<void> | void,
  ): Promise<void>;
  /** The same for a topic pattern (`learn.*`). */
  async subscribe(
    pattern: string,
    handler: (payload: EventPayload<EventKey>, key: EventKey) => Promise<void> | void,
  ): Promise<void>;
  async subscribe(
    pattern: string,
    handler: (payload: EventPayload<EventKey>, key: EventKey) => Promise<void> | void,
  ): Promise<void> {
    const reg: ConsumerReg = {
      queue: '',
      exclusiveBinding: { exchange: EVENTS_EXCHANGE, pattern },
      handler: async (d) => {
        const type = eventType(d.routingKey);
        let payload: EventPayload<EventKey>;
        try {
          if (!type) throw new ContractError(`event ${d.routingKey} is not in the catalogue`);
          payload = parsePayload(type.schema, d.body, `${d.routingKey} event`) as EventPayload<EventKey>;
        } catch (err) {
          await this.deadLetter(DEAD_LETTERED_EVENT_PREFIX + d.routingKey, d, err, 1).catch(
            (pubErr: unknown) => this.log.warn({ err: pubErr }, 'could not dead-letter an invalid event'),
          );
          return;
        }
        await handler(payload, d.routingKey as EventKey);
      },
      opts: { prefetch: 100, maxAttempts: 1 },
    };
    this.consumers.push(reg);
    if (this.conn && this.pub) await this.attach(this.conn, reg);
  }

  // ---- request/reply (catalogue: PolicyRpc) ----

  /**
   * Sends a request of `rpc` and resolves with its validated answer. The timeout covers
   * the whole call, a wait for the connection included. Rejects with RpcTimeoutError (no
   * answer in time), RpcLostError (the connection went after the request was sent),
   * BusUnavailableError (not sent: no connection, the broker refuses publishing or did not
   * open the RPC channel in time) or
   * RpcReplyError (an answer that breaks the contract).
   */
  async call<R extends RpcType>(
    rpc: R,
    request: RpcRequestInput<R>,
    opts: { timeoutMs: number; body?: Buffer },
  ): Promise<RpcReply<R>> {
    const req = parsePayload(rpc.request, request, `${rpc.name} request`);
    const deadline = Date.now() + opts.timeoutMs;
    if (this.stopping) throw new BusUnavailableError('bus stopped');
    if (!this.connected) await this.waitConnected(Math.max(0, deadline - Date.now()));
    const refusal = this.publishRefusal();
    if (refusal) throw refusal;
    // the channel is opened by the first call on a connection: its answer counts against
    // the call's deadline too (a broker that stops reading would hold every call on it);
    // a request never sent is the broker's failure, not the server's
    const channel = await within(
      this.rpcChannel(this.connection()),
      deadline - Date.now(),
      () => new BusUnavailableError(`RabbitMQ did not open the RPC channel within ${opts.timeoutMs} ms`),
    );
    const answer = await channel.send(
      rpc.queue,
      opts.body ?? Buffer.alloc(0),
      { [rpc.requestHeader]: JSON.stringify(req) },
      Math.max(1, deadline - Date.now()),
    );
    try {
      return parsePayload(rpc.reply, answer.body, `${rpc.name} reply`) as RpcReply<R>;
    } catch (err) {
      throw new RpcReplyError((err as Error).message);
    }
  }

  private rpcChannel(conn: ChannelModel): Promise<RpcChannel> {
    if (this.rpc?.conn !== conn) {
      const entry: { conn: ChannelModel; channel: Promise<RpcChannel> } = {
        conn,
        channel: Promise.resolve(null as unknown as RpcChannel),
      };
      const drop = () => {
        if (this.rpc === entry) this.rpc = null;
      };
      entry.channel = RpcChannel.open(conn, this.log, drop).catch((err: unknown) => {
        drop();
        throw new BusUnavailableError(`RPC channel not opened: ${(err as Error).message}`);
      });
      this.rpc = entry;
    }
    return this.rpc.channel;
  }

  /**
   * Serves `rpc`: consumes its queue and answers each request through direct reply-to.
   * A request that fails validation, or that `handler` throws on, gets the catalogue's
   * `unanswerable()` answer; nothing is run twice or dead-lettered.
   */
  async serve<R extends RpcType>(
    rpc: R,
    handler: (request: RpcRequest<R>, body: Buffer, signal?: AbortSignal) => Promise<z.input<R['reply']>>,
    opts: { prefetch: number },
  ): Promise<void> {
    await this.consume(
      rpc.queue,
      async (d) => {
        const id = headerText(d.headers[Headers.correlationId]) ?? d.correlationId;
        if (!d.replyTo || !id) {
          this.log.warn({ queue: rpc.queue }, 'request without reply-to or correlation id, dropped');
          return;
        }
        // the requester stops waiting when the request's expiration has passed (counted
        // from now: never before it does); work for it after that is for nobody
        const signal = d.expiration === undefined ? undefined : AbortSignal.timeout(d.expiration);
        let answer: unknown;
        try {
          answer = await handler(
            parsePayload(rpc.request, d.headers[rpc.requestHeader], `${rpc.name} request`) as RpcRequest<R>,
            d.body,
            signal,
          );
        } catch (err) {
          if (signal?.aborted) {
            this.log.debug({ err, queue: rpc.queue }, 'requester stopped waiting; no answer');
            return;
          }
          this.log.warn({ err, queue: rpc.queue }, 'request not answerable');
          answer = rpc.unanswerable();
        }
        if (signal?.aborted) return;
        await this.publish({
          exchange: '',
          routingKey: d.replyTo,
          body: Buffer.from(JSON.stringify(answer)),
          persistent: false,
          // RabbitMQ (3.x) returns a mandatory publish to a direct reply-to address as
          // unroutable although it delivers it: every answer would come back to us in
          // full. A requester that went away loses nothing either way.
          mandatory: false,
          headers: { [Headers.correlationId]: id },
        }).catch((err: unknown) => this.log.debug({ err }, 'requester went away before the answer'));
      },
      { prefetch: opts.prefetch, maxAttempts: rpc.failure.maxAttempts },
    );
  }

  // ---- consuming ----

  /** Registers a consumer; it is attached now if connected and again after every reconnect. */
  async consume(queue: string, handler: (d: Delivery) => Promise<void>, opts: ConsumeOptions): Promise<void> {
    const reg: ConsumerReg = { queue, handler, opts };
    this.consumers.push(reg);
    if (this.conn && this.pub) await this.attach(this.conn, reg);
  }

  private async attach(conn: ChannelModel, reg: ConsumerReg): Promise<void> {
    const ch = await conn.createChannel();
    ch.on('error', (err: Error) => this.log.warn({ err, queue: reg.queue }, 'consumer channel error'));
    ch.on('close', () => this.onConsumerChannelClosed(conn, reg, ch));
    await ch.prefetch(reg.opts.prefetch);
    const acks = new AckBatcher(ch);
    const runs = new Set<Promise<void>>();
    let queue = reg.queue;
    if (reg.exclusiveBinding) {
      const q = await ch.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
      queue = q.queue;
      await ch.bindQueue(queue, reg.exclusiveBinding.exchange, reg.exclusiveBinding.pattern);
    }
    const { consumerTag } = await ch.consume(
      queue,
      (msg) => {
        if (!msg) return;
        if (!reg.exclusiveBinding) acks.received(msg);
        const p = this.handle(reg, acks, msg).finally(() => {
          this.inFlight.delete(p);
          runs.delete(p);
        });
        this.inFlight.add(p);
        runs.add(p);
      },
      { noAck: !!reg.exclusiveBinding },
    );
    reg.channel = ch;
    reg.acks = acks;
    reg.runs = runs;
    reg.tag = consumerTag;
  }

  /**
   * The broker closed a consumer's channel while the connection stays (its
   * consumer_timeout, a channel error): the consumer is attached again on a new channel.
   * Its unacked messages went back to the queue with the channel, and come again on the
   * new one. Runs holding a message for a backend end at once (their channel is gone);
   * runs still working on one are waited for first, up to REATTACH_WAIT_MS, so that a
   * message is not run twice at the same time (a second delivery while the first is
   * still sending). Without this the instance took no more mail until restarted.
   */
  private onConsumerChannelClosed(conn: ChannelModel, reg: ConsumerReg, ch: Channel): void {
    if (reg.channel !== ch) return;
    const runs = [...(reg.runs ?? [])];
    reg.channel = undefined;
    reg.acks = undefined;
    reg.runs = undefined;
    reg.tag = undefined;
    void this.reattach(conn, reg, runs);
  }

  private async reattach(conn: ChannelModel, reg: ConsumerReg, runs: Promise<void>[]): Promise<void> {
    // after the connection's own close, when the whole connection is going: the
    // reconnect (or the stop) sees to the consumer then
    await new Promise((r) => setImmediate(r));
    if (runs.length) await settlesWithin(Promise.allSettled(runs), REATTACH_WAIT_MS);
    if (this.stopping || this.conn !== conn || reg.channel || !this.consumers.includes(reg)) return;
    this.log.warn({ queue: reg.queue }, 'consumer channel closed by RabbitMQ, consuming again');
    try {
      await this.attach(conn, reg);
    } catch (err) {
      if (this.stopping || this.conn !== conn) return;
      // a channel that cannot be opened again: a new connection sets everything up again
      this.log.warn({ err, queue: reg.queue }, 'could not consume again, reconnecting');
      dropConnection(conn);
    }
  }

  private async handle(reg: ConsumerReg, acks: AckBatcher, msg: ConsumeMessage): Promise<void> {
    const headers = (msg.properties.headers ?? {}) as Record<string, unknown>;
    const redeliveries = Number(headers['x-delivery-count'] ?? 0);
    const delivery: Delivery = {
      body: msg.content,
      headers,
      redeliveries,
      routingKey: msg.fields.routingKey,
      ...(msg.properties.replyTo ? { replyTo: String(msg.properties.replyTo) } : {}),
      ...(msg.properties.correlationId ? { correlationId: String(msg.properties.correlationId) } : {}),
      ...(Number(msg.properties.expiration) > 0 ? { expiration: Number(msg.properties.expiration) } : {}),
    };
    if (reg.exclusiveBinding) {
      try {
        await reg.handler(delivery);
      } catch (err) {
        this.log.warn({ err }, 'event handler failed');
      }
      return;
    }
    try {
      // A message that was returned this often without an ack keeps killing its
      // consumer (or the consumer keeps being killed while holding it): stop trying.
      if (redeliveries >= reg.opts.maxAttempts * 2) {
        throw new PoisonMessageError(`redelivered ${redeliveries} times without being acknowledged`);
      }
      await this.runHolding(reg, acks, delivery);
      acks.ack(msg);
    } catch (err) {
      const attempt = redeliveries + 1;
      if (err instanceof BackendUnavailableError) {
        // held until the bus stopped or the channel went: the broker keeps the message
        acks.nack(msg);
        return;
      }
      if (this.unpublishable(err)) {
        // the broker refuses or lost our publishes (a resource alarm, a restart): not the
        // message's fault. It is held until publishing works again and then run again in
        // place, so the outage neither spins it through the queue nor uses up its attempts.
        this.log.warn({ queue: reg.queue, err }, 'publishing unavailable, holding the message');
        if (await this.holdWhileUnpublishable(reg, acks)) return this.handle(reg, acks, msg);
        acks.nack(msg);
        return;
      }
      if (err instanceof PoisonMessageError || attempt >= reg.opts.maxAttempts) {
        try {
          // held until confirmed, as the handler's own publishes are
          await handling.run(true, () => this.deadLetter(reg.queue, delivery, err, attempt));
          acks.ack(msg);
        } catch (pubErr) {
          this.log.warn({ err: pubErr }, 'could not dead-letter, returning message to the queue');
          // not straight back while the broker refuses publishes: that would spin it
          if (this.unpublishable(pubErr)) await this.holdWhileUnpublishable(reg, acks);
          acks.nack(msg);
        }
        return;
      }
      this.log.warn({ queue: reg.queue, err, attempt }, 'processing failed, message returned to the queue');
      await sleep(Math.min((reg.opts.retryDelayMs ?? 500) * attempt, 10_000));
      acks.nack(msg);
    }
  }

  /** Publishes a message that cannot be processed to the dead-letter exchange, with the reason. */
  private async deadLetter(queue: string, d: Delivery, err: unknown, attempt: number): Promise<void> {
    const reason = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    await this.publish({
      exchange: DEAD_LETTER_EXCHANGE,
      routingKey: queue,
      body: d.body,
      headers: {
        ...d.headers,
        [Headers.deadLetterReason]: reason.slice(0, 1000),
        [Headers.deadLetterQueue]: queue,
        [Headers.deadLetterAttempts]: attempt,
        [Headers.deadLetterTime]: new Date().toISOString(),
      },
    });
    this.log.error({ queue, err, attempt }, 'message dead-lettered');
  }

  /**
   * Runs the handler; while it fails with BackendUnavailableError the message is held
   * and run again, until it succeeds, fails otherwise, the bus stops or its channel goes.
   */
  private async runHolding(reg: ConsumerReg, acks: AckBatcher, delivery: Delivery): Promise<void> {
    let held = 0;
    try {
      for (; ; held++) {
        try {
          await handling.run(true, () => reg.handler(delivery));
          if (held)
            this.log.info({ queue: reg.queue, held }, 'backend available again, held message processed');
          return;
        } catch (err) {
          if (!(err instanceof BackendUnavailableError) || this.stopping || reg.acks !== acks) throw err;
          if (!held) {
            this.log.warn({ queue: reg.queue, err }, 'backend unavailable, holding the message');
            this.held.set(reg.queue, (this.held.get(reg.queue) ?? 0) + 1);
          }
          await sleep(Math.min(250 * 2 ** held, 2000));
          if (this.stopping || reg.acks !== acks) throw err;
        }
      }
    } finally {
      if (held) {
        const n = this.held.get(reg.queue)! - 1;
        if (n) this.held.set(reg.queue, n);
        else this.held.delete(reg.queue);
      }
    }
  }

  /** Messages held now, per queue, because a backend their handler needs is unavailable. */
  heldMessages(): ReadonlyMap<string, number> {
    return this.held;
  }

  /** A publish failed because the broker refuses or lost publishing, not because of the message. */
  private unpublishable(err: unknown): boolean {
    return err instanceof BusUnavailableError && this.publishRefusal() !== null && !this.stopping;
  }

  /**
   * Waits while publishing is refused or the connection is down. True when publishing
   * works again on the channel the message came from; false when the bus stops or that
   * channel is gone (the broker redelivers the message then).
   */
  private async holdWhileUnpublishable(reg: ConsumerReg, acks: AckBatcher): Promise<boolean> {
    while (this.publishRefusal() && !this.stopping && reg.acks === acks) await sleep(200);
    return !this.stopping && reg.acks === acks;
  }

  /**
   * Sets the time (ms since the epoch) by which the stop, under way or still to come, has
   * the connection gone: until then the stop waits for the broker to answer the consumers'
   * cancels and the close, and then destroys the connection. A process's stop sets it at
   * its signal (runtime's runMain), so a broker that stopped answering cannot hold the stop
   * past SHUTDOWN_GRACE. Unset, each waits CLOSE_TIMEOUT_MS at most.
   */
  closeBy(at: number): void {
    this.closeDeadline = at;
  }

  /**
   * Stops consuming, waits for handlers in flight (up to `drainMs`), closes the
   * connection (by the time closeBy set). Stopping again (until the next start) waits for
   * the same stop.
   */
  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.stopping = true;
    const started = Date.now();
    const drainEnd = this.opts.drainMs === undefined ? undefined : started + this.opts.drainMs;
    // the cancels go out together, and are waited for no longer than the drain, nor past the
    // deadline: a broker that does not answer cannot hold the stop, and closing the
    // connection cancels too
    const cancels = this.consumers.flatMap((c) => (c.channel && c.tag ? [c.channel.cancel(c.tag)] : []));
    const cancelEnd = Math.min(drainEnd ?? Infinity, this.closeDeadline ?? started + CLOSE_TIMEOUT_MS);
    const answered = await settlesWithin(Promise.allSettled(cancels), Math.max(0, cancelEnd - Date.now()));
    const drained = Promise.allSettled([...this.inFlight]).then(() => true);
    const drainLeft = Math.min(drainEnd ?? Infinity, this.closeDeadline ?? Infinity) - Date.now();
    let timer: NodeJS.Timeout | undefined;
    const finished =
      drainLeft === Infinity
        ? await drained
        : await Promise.race([
            drained,
            new Promise<false>((r) => (timer = setTimeout(() => r(false), Math.max(0, drainLeft)))),
          ]);
    clearTimeout(timer);
    // closing the connection returns them to their queues: redelivered, never lost
    if (!finished)
      this.log.warn({ inFlight: this.inFlight.size }, 'messages unfinished at shutdown go back to the queue');
    // acks still waiting for the end of the turn go out before the channel closes
    for (const c of this.consumers) c.acks?.flush();
    this.failPending(new BusUnavailableError('bus stopped'));
    // a broker that left the cancels unanswered will not answer the close either
    if (!answered) this.log.warn('RabbitMQ did not answer the stop, closing the connection');
    await this.teardown(answered ? this.closeDeadline : Date.now());
    this.consumers = [];
  }
}

/**
 * How long a consumer whose channel the broker closed waits for the runs of that channel
 * before it consumes again; past it, a run still going may see its message run again.
 */
const REATTACH_WAIT_MS = 5 * 60_000;

/**
 * Settles one channel's deliveries. Acks wait for the end of the current turn of the
 * event loop; then the run of finished deliveries at the head of the channel's
 * outstanding ones goes as one `multiple` ack (one frame, one settle in the quorum
 * queue's log instead of one each), and finished ones behind a delivery still being
 * processed are acked one by one, so a slow message never holds the prefetch window.
 * A `multiple` ack only ever covers deliveries that are finished: every delivery of the
 * channel is in `outstanding` from its arrival until it is settled.
 */
class AckBatcher {
  private outstanding: ConsumeMessage[] = [];
  private readonly done = new Set<ConsumeMessage>();
  private scheduled = false;

  constructor(private readonly ch: Channel) {}

  received(msg: ConsumeMessage): void {
    this.outstanding.push(msg);
  }

  ack(msg: ConsumeMessage): void {
    this.done.add(msg);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  /** Returns a delivery to the queue at once (never covered by a later `multiple` ack). */
  nack(msg: ConsumeMessage): void {
    this.outstanding = this.outstanding.filter((m) => m !== msg);
    safe(() => this.ch.nack(msg, false, true));
  }

  flush(): void {
    this.scheduled = false;
    let run = 0;
    while (run < this.outstanding.length && this.done.has(this.outstanding[run]!)) run++;
    if (run > 0) {
      const last = this.outstanding[run - 1]!;
      safe(() => this.ch.ack(last, run > 1));
      for (const m of this.outstanding.slice(0, run)) this.done.delete(m);
      this.outstanding = this.outstanding.slice(run);
    }
    if (!this.done.size) return;
    for (const m of this.done) safe(() => this.ch.ack(m));
    this.outstanding = this.outstanding.filter((m) => !this.done.has(m));
    this.done.clear();
  }
}

function safe(fn: () => void): void {
  try {
    fn();
  } catch {
    // channel already closed: the broker returns the message to the queue itself
  }
}

/** A header's text (AMQP long strings may arrive as bytes), or undefined. */
function headerText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (Buffer.isBuffer(v)) return v.toString();
  return undefined;
}

/** Whether `p` settled (either way) within `ms`; it is not waited for any longer. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([
    p.then(
      () => true,
      () => true,
    ),
    new Promise<false>((r) => (timer = setTimeout(() => r(false), ms))),
  ]);
  clearTimeout(timer);
  return settled;
}

/**
 * Closes a connection's socket at once: the close handshake would wait for the broker that
 * is not answering. amqplib hears of it as a socket error (it does not listen for 'close'),
 * fails what waits on the connection and emits 'close'.
 */
function dropConnection(conn: ChannelModel): void {
  const stream = (conn.connection as unknown as { stream?: { destroy(err?: Error): void } }).stream;
  stream?.destroy(new Error('RabbitMQ did not answer in time'));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
