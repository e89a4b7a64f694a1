import { randomUUID } from 'node:crypto';
import { connect, type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import {
  DEAD_LETTER_EXCHANGE,
  ENVELOPE_HEADER,
  ENVELOPE_VERSION,
  EVENTS_EXCHANGE,
  Headers,
  MAIL_EXCHANGE,
  RoutingKeys,
  type Envelope,
  type MailRoutingKey,
} from '@mailyard/contracts';
import type { Logger } from '@mailyard/observability';
import { declareTopology } from './topology.js';

/** The broker cannot be reached, or the connection dropped before the confirm. */
export class BusUnavailableError extends Error {
  override readonly name = 'BusUnavailableError';
}
/** The broker confirmed but could not route the message to any queue (mandatory flag). */
export class UnroutableError extends Error {
  override readonly name = 'UnroutableError';
}
/** Thrown by a consumer handler for a message that can never be processed: dead-letter it now. */
export class PoisonMessageError extends Error {
  override readonly name = 'PoisonMessageError';
}

/**
 * Thrown by a consumer handler when a backend it needs (Redis) failed: the message is
 * not at fault and no answer was had. The bus holds the message and runs the handler
 * again after a growing pause, without returning it to the queue or counting an
 * attempt, so an outage of any length never dead-letters it.
 */
export class BackendUnavailableError extends Error {
  override readonly name = 'BackendUnavailableError';
}

export interface PublishItem {
  exchange?: string;
  routingKey: string;
  body: Buffer;
  headers?: Record<string, unknown>;
  /** Persistent unless false (events are transient). */
  persistent?: boolean;
  /** Delivered to the queue only if it is not consumed within this many ms (delay queues). */
  expiration?: number;
}

export interface Delivery {
  body: Buffer;
  headers: Record<string, unknown>;
  /** How many times the broker delivered this message before (quorum queues count returns). */
  redeliveries: number;
  routingKey: string;
  raw: ConsumeMessage;
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
  /** Events: called with true/false when the connection comes up or goes down. */
  onStateChange?: (connected: boolean) => void;
  /**
   * At stop, how long handlers in flight may finish; what is not finished by then goes
   * back to its queue unacknowledged (redelivered elsewhere). Unbounded when unset.
   */
  drainMs?: number;
}

interface ConsumerReg {
  queue: string;
  handler: (d: Delivery) => Promise<void>;
  opts: ConsumeOptions;
  channel?: Channel;
  acks?: AckBatcher;
  tag?: string;
  exclusiveBinding?: { exchange: string; pattern: string };
}

interface Pending {
  resolve: () => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
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
 * One AMQP connection per process: a confirm channel for publishing (many publishes
 * in flight, each resolved by its own confirm) and a channel per consumer. Reconnects
 * with backoff after the broker restarts and re-attaches every consumer.
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
  private connecting: Promise<void> | null = null;
  private inFlight = new Set<Promise<void>>();
  private waiters: (() => void)[] = [];
  private warnedDown = false;
  private readonly log: Logger;

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

  /**
   * How many consumers `queue` has now (a passive declare, on a channel of its own: a
   * missing queue closes the channel it is asked on). Rejects when not connected.
   */
  async consumerCount(queue: string): Promise<number> {
    const conn = this.conn;
    if (!conn || !this.pub)
      throw new BusUnavailableError(`RabbitMQ unreachable at ${redactUrl(this.opts.url)}`);
    const ch = await conn.createChannel();
    ch.on('error', () => undefined);
    try {
      return (await ch.checkQueue(queue)).consumerCount;
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
    if (!this.pub) return new BusUnavailableError(`RabbitMQ unreachable at ${redactUrl(this.opts.url)}`);
    if (this.blockedReason)
      return new BusUnavailableError(`RabbitMQ refuses publishing: ${this.blockedReason}`);
    return null;
  }

  /** Starts connecting in the background; resolves at once. */
  start(): void {
    this.stopping = false;
    this.stopped = null;
    void this.ensureConnecting();
  }

  /** Resolves when connected, or rejects after `timeoutMs`. */
  waitConnected(timeoutMs = 10_000): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        reject(new BusUnavailableError(`RabbitMQ unreachable at ${redactUrl(this.opts.url)}`));
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
    while (!this.stopping) {
      try {
        await this.connectOnce();
        this.warnedDown = false;
        this.log.info({ url: redactUrl(this.opts.url) }, 'connected to RabbitMQ');
        this.opts.onStateChange?.(true);
        for (const w of this.waiters.splice(0)) w();
        return;
      } catch (err) {
        await this.teardown();
        if (!this.warnedDown) {
          this.log.warn({ url: redactUrl(this.opts.url), err }, 'RabbitMQ unreachable, retrying');
          this.warnedDown = true;
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  private async connectOnce(): Promise<void> {
    const u = new URL(this.opts.url);
    if (!u.searchParams.has('heartbeat')) u.searchParams.set('heartbeat', '10');
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
    // A failed declaration closes its channel, so declare on a throwaway one.
    const setup = await conn.createChannel();
    await declareTopology(setup);
    await setup.close();
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

  private async teardown(): Promise<void> {
    const conn = this.conn;
    this.conn = null;
    this.pub = null;
    if (conn) await conn.close().catch(() => undefined);
  }

  /** Publishes with persistence, mandatory routing and a publisher confirm. */
  publish(item: PublishItem): Promise<void> {
    const refusal = this.publishRefusal();
    if (refusal) return Promise.reject(refusal);
    const pub = this.pub!;
    const messageId = randomUUID();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(messageId);
        reject(new BusUnavailableError('RabbitMQ did not confirm the message in time'));
      }, this.opts.publishTimeoutMs ?? 15_000);
      this.pending.set(messageId, { resolve, reject, timer });
      try {
        pub.publish(
          item.exchange ?? MAIL_EXCHANGE,
          item.routingKey,
          item.body,
          {
            persistent: item.persistent ?? true,
            mandatory: true,
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

  /** Publishes a mail message: raw RFC 5322 bytes as the body, the envelope as a header. */
  publishMail(
    routingKey: MailRoutingKey,
    body: Buffer,
    envelope: Envelope,
    expiration?: number,
  ): Promise<void> {
    return this.publish({
      routingKey,
      body,
      headers: { [ENVELOPE_HEADER]: JSON.stringify(envelope), [Headers.envelopeVersion]: ENVELOPE_VERSION },
      ...(expiration !== undefined ? { expiration } : {}),
    });
  }

  /**
   * Publishes one message for local and remote recipients at once: a single AMQP message
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
    return this.publish({
      routingKey: RoutingKeys.delivery,
      body,
      headers: {
        [ENVELOPE_HEADER]: JSON.stringify(env),
        [Headers.envelopeVersion]: ENVELOPE_VERSION,
        BCC: [RoutingKeys.outbound],
      },
    });
  }

  /** Publishes an event (best effort, not persistent: events describe state already on disk). */
  async publishEvent(key: string, payload: unknown): Promise<void> {
    // under a resource alarm RabbitMQ stops reading a connection that publishes, and the
    // acks of its consumers would wait behind the event
    const refusal = this.publishRefusal();
    if (refusal) throw refusal;
    this.pub!.publish(EVENTS_EXCHANGE, key, Buffer.from(JSON.stringify(payload)), {
      persistent: false,
      contentType: 'application/json',
    });
  }

  /** Registers a consumer; it is attached now if connected and again after every reconnect. */
  async consume(queue: string, handler: (d: Delivery) => Promise<void>, opts: ConsumeOptions): Promise<void> {
    const reg: ConsumerReg = { queue, handler, opts };
    this.consumers.push(reg);
    if (this.conn && this.pub) await this.attach(this.conn, reg);
  }

  /**
   * Subscribes to events matching `pattern` with a private, auto-deleted queue: every
   * subscriber (every instance of a service) sees every event.
   */
  async subscribe(
    pattern: string,
    handler: (payload: unknown, key: string) => Promise<void> | void,
  ): Promise<void> {
    const reg: ConsumerReg = {
      queue: '',
      exclusiveBinding: { exchange: EVENTS_EXCHANGE, pattern },
      handler: async (d) => {
        let payload: unknown;
        try {
          payload = JSON.parse(d.body.toString());
        } catch {
          return;
        }
        await handler(payload, d.routingKey);
      },
      opts: { prefetch: 100, maxAttempts: 1 },
    };
    this.consumers.push(reg);
    if (this.conn && this.pub) await this.attach(this.conn, reg);
  }

  private async attach(conn: ChannelModel, reg: ConsumerReg): Promise<void> {
    const ch = await conn.createChannel();
    ch.on('error', (err: Error) => this.log.warn({ err, queue: reg.queue }, 'consumer channel error'));
    await ch.prefetch(reg.opts.prefetch);
    const acks = new AckBatcher(ch);
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
        const p = this.handle(reg, acks, msg).finally(() => this.inFlight.delete(p));
        this.inFlight.add(p);
      },
      { noAck: !!reg.exclusiveBinding },
    );
    reg.channel = ch;
    reg.acks = acks;
    reg.tag = consumerTag;
  }

  private async handle(reg: ConsumerReg, acks: AckBatcher, msg: ConsumeMessage): Promise<void> {
    const headers = (msg.properties.headers ?? {}) as Record<string, unknown>;
    const redeliveries = Number(headers['x-delivery-count'] ?? 0);
    const delivery: Delivery = {
      body: msg.content,
      headers,
      redeliveries,
      routingKey: msg.fields.routingKey,
      raw: msg,
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
      const reason = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
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
          await this.publish({
            exchange: DEAD_LETTER_EXCHANGE,
            routingKey: reg.queue,
            body: msg.content,
            headers: {
              ...headers,
              [Headers.deadLetterReason]: reason.slice(0, 1000),
              'x-mailyard-original-queue': reg.queue,
              'x-mailyard-attempts': attempt,
            },
          });
          this.log.error({ queue: reg.queue, err, attempt }, 'message dead-lettered');
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

  /**
   * Runs the handler; while it fails with BackendUnavailableError the message is held
   * and run again, until it succeeds, fails otherwise, the bus stops or its channel goes.
   */
  private async runHolding(reg: ConsumerReg, acks: AckBatcher, delivery: Delivery): Promise<void> {
    for (let held = 0; ; held++) {
      try {
        await reg.handler(delivery);
        if (held)
          this.log.info({ queue: reg.queue, held }, 'backend available again, held message processed');
        return;
      } catch (err) {
        if (!(err instanceof BackendUnavailableError) || this.stopping || reg.acks !== acks) throw err;
        if (!held) this.log.warn({ queue: reg.queue, err }, 'backend unavailable, holding the message');
        await sleep(Math.min(250 * 2 ** held, 2000));
        if (this.stopping || reg.acks !== acks) throw err;
      }
    }
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
   * Stops consuming, waits for handlers in flight (up to `drainMs`), closes the
   * connection. Stopping again (until the next start) waits for the same stop.
   */
  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.stopping = true;
    for (const c of this.consumers) {
      if (c.channel && c.tag) await c.channel.cancel(c.tag).catch(() => undefined);
    }
    const drained = Promise.allSettled([...this.inFlight]).then(() => true);
    const limit = this.opts.drainMs;
    let timer: NodeJS.Timeout | undefined;
    const finished =
      limit === undefined
        ? await drained
        : await Promise.race([
            drained,
            new Promise<false>((r) => (timer = setTimeout(() => r(false), limit))),
          ]);
    clearTimeout(timer);
    // closing the connection returns them to their queues: redelivered, never lost
    if (!finished)
      this.log.warn({ inFlight: this.inFlight.size }, 'messages unfinished at shutdown go back to the queue');
    // acks still waiting for the end of the turn go out before the channel closes
    for (const c of this.consumers) c.acks?.flush();
    this.failPending(new BusUnavailableError('bus stopped'));
    await this.teardown();
    this.consumers = [];
  }
}

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

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
