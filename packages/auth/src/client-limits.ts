import type { Redis } from 'ioredis';
import { ipInNetworks, parseCidr, type Cidr } from '@mailyard/config';
import { redisAnswer } from './deadline.js';
import { clientKey, pipelineResults } from './lockout.js';

export interface ClientLimitsOptions {
  /** The listener's name in the rate counter (`smtpd`, `submission`, `retrieval`): counts are per service, as in Postfix's anvil. */
  service: string;
  /** Connections at once from one client (Postfix: smtpd_client_connection_count_limit); 0: no limit. */
  maxConnections: number;
  /** New connections per minute from one client (Postfix: smtpd_client_connection_rate_limit); 0: no limit. */
  ratePerMinute: number;
  /** Clients no limit applies to (Postfix: smtpd_client_event_limit_exceptions). */
  exceptions: readonly string[];
  /** Where the rate is counted across instances; without it, or while it fails, this process counts alone. */
  redis?: Redis | null;
  /** How long to wait for Redis before counting here instead. */
  redisTimeoutMs?: number;
  /** A Redis failure, for the log (the limit still holds, counted in this process). */
  onError?: (err: unknown) => void;
  now?: () => number;
  /**
   * Where connections at once are counted; by default in this process. Processes that
   * share one listener (workers of one instance) count in their primary; SharedSlots
   * counts over every instance.
   */
  slots?: ConnectionSlots;
}

/**
 * Counted slots (connections at once): in this process (LocalSlots), in the primary of
 * an instance's workers (ClusterSlots of @mailyard/runtime), or over every instance in
 * Redis on top of either (SharedSlots).
 */
export interface ConnectionSlots {
  /** Takes a slot of `key` when fewer than `max` are taken; false when full. */
  take(key: string, max: number): Promise<boolean>;
  give(key: string): void;
}

/** Slots counted in this process. */
export class LocalSlots implements ConnectionSlots {
  private readonly taken = new Map<string, number>();

  take(key: string, max: number): Promise<boolean> {
    return Promise.resolve(this.takeNow(key, max));
  }

  takeNow(key: string, max: number): boolean {
    const n = this.taken.get(key) ?? 0;
    if (max && n >= max) return false;
    this.taken.set(key, n + 1);
    return true;
  }

  give(key: string): void {
    const n = (this.taken.get(key) ?? 1) - 1;
    if (n <= 0) this.taken.delete(key);
    else this.taken.set(key, n);
  }
}

export type Admission =
  { ok: true; release: () => void } | { ok: false; limit: 'connection-count' | 'connection-rate' };

const WINDOW_MS = 60_000;

/**
 * Per-client connection limits of a listener (SMTP 25/587/465, IMAP, POP3), so that one
 * client address cannot take every slot: Postfix's smtpd_client_connection_count_limit
 * and smtpd_client_connection_rate_limit (anvil), with its
 * smtpd_client_event_limit_exceptions. A client is its address, an IPv6 one its /64
 * (as the login lockout counts it).
 *
 * Connections at once are counted where `slots` says: in this instance (this process,
 * or the primary of its workers), or over every instance with SharedSlots, a lease per
 * connection that the instance holding it keeps alive (one that dies leaves its slots
 * taken only until the leases end). The SMTP listeners count in the instance, as
 * Postfix's anvil counts per host. The rate is counted
 * in Redis, one counter per client and minute for all instances, which is one INCR per
 * connection. When Redis fails or is slow, the rate is counted in this process
 * instead: the limit never turns into "allowed".
 */
export class ClientLimits {
  private readonly slots: ConnectionSlots;
  private readonly local = new Map<string, number>();
  private localWindow = -1;
  private readonly exceptions: Cidr[];
  private readonly now: () => number;

  constructor(private readonly opts: ClientLimitsOptions) {
    this.exceptions = opts.exceptions.map((c) => parseCidr(c)).filter((c): c is Cidr => c !== null);
    this.now = opts.now ?? Date.now;
    this.slots = opts.slots ?? new LocalSlots();
  }

  /** Admits a connection from `ip` or says which limit it is over; an admitted one holds its slot until release(). */
  async admit(ip: string): Promise<Admission> {
    if (ipInNetworks(ip, this.exceptions)) return { ok: true, release: () => undefined };
    const key = clientKey(ip);
    const { maxConnections, ratePerMinute } = this.opts;
    // every attempt counts toward the rate, as in anvil, refused or not
    const rate = ratePerMinute ? this.countAttempt(key) : null;
    // (a refused attempt's rate count goes on by itself; countAttempt never rejects)
    if (!(await this.slots.take(`ip:${key}`, maxConnections)))
      return { ok: false, limit: 'connection-count' };
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.slots.give(`ip:${key}`);
    };
    if (rate && (await rate) > ratePerMinute) {
      release();
      return { ok: false, limit: 'connection-rate' };
    }
    return { ok: true, release };
  }

  /** This minute's attempts from a client: from Redis, or this process's own count when Redis fails. */
  private async countAttempt(key: string): Promise<number> {
    const window = Math.floor(this.now() / WINDOW_MS);
    if (window !== this.localWindow) {
      this.local.clear();
      this.localWindow = window;
    }
    const local = (this.local.get(key) ?? 0) + 1;
    this.local.set(key, local);
    const redis = this.opts.redis;
    if (!redis) return local;
    const k = `conn:rate:${this.opts.service}:${key}:${window}`;
    try {
      const res = await redisAnswer(
        pipelineResults(
          redis
            .pipeline()
            .incr(k)
            .expire(k, (2 * WINDOW_MS) / 1000, 'NX'),
        ),
        this.opts.redisTimeoutMs ?? 500,
        'the connection rate',
      );
      return Number(res[0]);
    } catch (err) {
      this.opts.onError?.(err);
      return local;
    }
  }
}
