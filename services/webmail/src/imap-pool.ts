import { ImapFlow } from 'imapflow';
import type { Logger } from '@mailyard/observability';
import { ConnectionLostError, errors, fromImapRefusal, UpstreamError } from './errors.js';
import type { WebmailMetrics } from './metrics.js';

/** Where IMAP (or submission) is and how the webmail logs in there: its service login, acting for an account. */
export interface ImapTarget {
  host: string;
  port: number;
  servername: string;
  rejectUnauthorized: boolean;
  ca?: Buffer;
  service: { name: string; password: string };
}

interface Slot {
  client: ImapFlow;
  idleTimer: NodeJS.Timeout | null;
}

interface AccountConnections {
  idle: Slot[];
  busy: number;
  waiters: { resolve: (s: Slot | null) => void }[];
}

/** How long a request waits for a free connection of its account before it fails (503). */
export const POOL_WAIT_MS = 30_000;

/** The error of the last command each connection's imapflow reported (see `made`). */
const commandErrors = new WeakMap<ImapFlow, Error>();

/**
 * Runs one of imapflow's changes that answer a refusal with `false` rather than an error
 * (messageFlagsAdd and messageFlagsRemove, messageMove, messageDelete: STORE, MOVE,
 * EXPUNGE), the NO reaching only the connection's logger. It is thrown here as the
 * store said it, for the pool to read as any other refusal (a full mailbox, a folder
 * gone): a change the store did not make is never answered as made.
 */
export async function made<T>(c: ImapFlow, change: () => Promise<T | false | undefined>): Promise<T> {
  commandErrors.delete(c);
  const result = await change();
  if (result !== false && result !== undefined) return result;
  throw commandErrors.get(c) ?? errors.imapRefused('the change was not made');
}

/** Opens an IMAP session for `account` through the service login. */
export function connectImap(
  target: ImapTarget,
  account: string,
  opts: { idle?: boolean; logger: Logger },
): ImapFlow {
  const debug = process.env.IMAP_DEBUG ? opts.logger.child({ account, component: 'imapflow' }) : null;
  // imapflow logs a refused command's error at warn, which made() needs; the rest
  // reaches a log only with IMAP_DEBUG
  const imapLogger = {
    debug: (entry: object) => debug?.debug(entry),
    info: (entry: object) => debug?.info(entry),
    warn: (entry: { err?: unknown }) => {
      if (entry?.err instanceof Error) commandErrors.set(client, entry.err);
      debug?.warn(entry);
    },
    error: (entry: object) => debug?.error(entry),
    fatal: (entry: object) => debug?.error(entry),
    // without it imapflow takes every level as on, and renders each command and
    // response for a debug entry nobody reads
    isLevelEnabled: (level: string) => (debug ? debug.isLevelEnabled(level) : level === 'warn'),
  };
  const client: ImapFlow = new ImapFlow({
    host: target.host,
    port: target.port,
    secure: true,
    servername: target.servername,
    tls: {
      rejectUnauthorized: target.rejectUnauthorized,
      minVersion: 'TLSv1.2',
      ...(target.ca ? { ca: target.ca } : {}),
    },
    auth: {
      user: target.service.name,
      pass: target.service.password,
      authzid: account,
      loginMethod: 'AUTH=PLAIN',
    },
    logger: imapLogger,
    // pool connections run one request after another; only the notifier's connection idles
    disableAutoIdle: !opts.idle,
    ...(opts.idle ? { autoIdleDelay: 50 } : {}),
    connectionTimeout: 15_000,
    greetingTimeout: 15_000,
    clientInfo: { name: 'Mailyard webmail' },
    // the services sit on one network: deflate would only cost CPU on both ends
    disableCompression: true,
  });
  client.on('error', (err: Error) => opts.logger.debug({ account, err }, 'IMAP connection error'));
  return client;
}

/**
 * A bounded set of IMAP connections per account (`imap_connections_per_user`), reused
 * between requests: a request takes a free connection (one already on the folder it needs
 * when there is one), opens a new one while under the bound, or waits in line. Unused
 * connections log out after `imap_idle_timeout`. Every connection is the webmail's
 * service login acting for that one account, so a request can only ever reach the
 * mailbox of the session's own account.
 */
export class ImapPool {
  private readonly accounts = new Map<string, AccountConnections>();
  private closed = false;

  constructor(
    private readonly opts: {
      target: ImapTarget;
      maxPerAccount: number;
      idleMs: number;
      /** The longest one request's IMAP work may take (`imap_timeout`). */
      timeoutMs: number;
      logger: Logger;
      metrics: WebmailMetrics;
    },
  ) {}

  /**
   * Runs `fn` with a connection of `account`, preferably one with `folder` selected. A run
   * that takes longer than `timeoutMs` (a store that stopped answering) closes its
   * connection and fails, as a temporary failure: the request is answered, and the next
   * one gets a connection of its own.
   */
  async run<T>(account: string, fn: (c: ImapFlow) => Promise<T>, folder: string | null = null): Promise<T> {
    const slot = await this.acquire(account, folder);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.opts.logger.warn({ account, timeoutMs: this.opts.timeoutMs }, 'IMAP did not answer in time');
        slot.client.close();
        reject(new UpstreamError(`IMAP did not answer within ${this.opts.timeoutMs} ms`));
      }, this.opts.timeoutMs);
    });
    try {
      return await Promise.race([fn(slot.client), deadline]);
    } catch (err) {
      if (err instanceof UpstreamError) throw err;
      if (!slot.client.usable) throw new ConnectionLostError('IMAP connection lost', err);
      throw fromImapRefusal(err) ?? err;
    } finally {
      clearTimeout(timer);
      this.release(account, slot);
    }
  }

  private entry(account: string): AccountConnections {
    let e = this.accounts.get(account);
    if (!e) {
      e = { idle: [], busy: 0, waiters: [] };
      this.accounts.set(account, e);
    }
    return e;
  }

  private async acquire(account: string, folder: string | null): Promise<Slot> {
    if (this.closed) throw new UpstreamError('shutting down');
    const e = this.entry(account);
    e.idle = e.idle.filter((s) => s.client.usable || (this.discard(s), false));
    let i =
      folder === null ? -1 : e.idle.findIndex((s) => s.client.mailbox && s.client.mailbox.path === folder);
    if (i < 0) i = e.idle.length - 1;
    if (i >= 0) {
      const [slot] = e.idle.splice(i, 1);
      if (slot!.idleTimer) clearTimeout(slot!.idleTimer);
      e.busy++;
      return slot!;
    }
    if (e.busy < this.opts.maxPerAccount) {
      e.busy++;
      try {
        return await this.open(account);
      } catch (err) {
        e.busy--;
        this.handOver(account);
        throw err;
      }
    }
    const slot = await new Promise<Slot | null>((resolve) => {
      const waiter = { resolve };
      e.waiters.push(waiter);
      setTimeout(() => {
        const at = e.waiters.indexOf(waiter);
        if (at >= 0) {
          e.waiters.splice(at, 1);
          resolve(null);
        }
      }, POOL_WAIT_MS).unref();
    });
    if (!slot) throw new UpstreamError('no IMAP connection became free in time');
    return slot;
  }

  private async open(account: string): Promise<Slot> {
    const client = connectImap(this.opts.target, account, { logger: this.opts.logger });
    const started = process.hrtime.bigint();
    // imapflow bounds the TCP and TLS set-up and the greeting, not the login after it
    const stalled = setTimeout(() => client.close(), this.opts.timeoutMs);
    try {
      await client.connect();
    } catch (err) {
      this.opts.metrics.imapConnects.inc({ result: 'failed' });
      this.opts.logger.warn(
        { account, err, response: (err as { response?: string }).response },
        'IMAP login failed',
      );
      client.close();
      throw new UpstreamError('IMAP unavailable', err);
    } finally {
      clearTimeout(stalled);
    }
    this.opts.metrics.imapConnects.inc({ result: 'ok' });
    this.opts.metrics.imapConnectSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
    this.opts.metrics.imapConnections.inc();
    client.once('close', () => this.opts.metrics.imapConnections.dec());
    return { client, idleTimer: null };
  }

  private release(account: string, slot: Slot): void {
    const e = this.entry(account);
    e.busy--;
    if (!slot.client.usable || this.closed) {
      this.discard(slot);
      this.handOver(account);
      return;
    }
    const waiter = e.waiters.shift();
    if (waiter) {
      e.busy++;
      waiter.resolve(slot);
      return;
    }
    slot.idleTimer = setTimeout(() => {
      const at = e.idle.indexOf(slot);
      if (at >= 0) e.idle.splice(at, 1);
      this.logout(slot);
      this.forgetIfUnused(account);
    }, this.opts.idleMs);
    slot.idleTimer.unref();
    e.idle.push(slot);
  }

  /** A connection went away: a waiter may open a new one in its place. */
  private handOver(account: string): void {
    const e = this.entry(account);
    const waiter = e.waiters.shift();
    if (!waiter) return this.forgetIfUnused(account);
    e.busy++;
    this.open(account).then(
      (slot) => waiter.resolve(slot),
      () => {
        e.busy--;
        waiter.resolve(null);
      },
    );
  }

  private forgetIfUnused(account: string): void {
    const e = this.accounts.get(account);
    if (e && !e.busy && !e.idle.length && !e.waiters.length) this.accounts.delete(account);
  }

  private discard(slot: Slot): void {
    if (slot.idleTimer) clearTimeout(slot.idleTimer);
    slot.client.close();
  }

  private logout(slot: Slot): void {
    if (slot.idleTimer) clearTimeout(slot.idleTimer);
    slot.client.logout().catch(() => slot.client.close());
  }

  /** Open connections of one account (tests, metrics). */
  size(account: string): number {
    const e = this.accounts.get(account);
    return e ? e.busy + e.idle.length : 0;
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.accounts.values()];
    this.accounts.clear();
    await Promise.all(
      all.flatMap((e) => {
        for (const w of e.waiters) w.resolve(null);
        return e.idle.map(async (s) => {
          if (s.idleTimer) clearTimeout(s.idleTimer);
          await s.client.logout().catch(() => s.client.close());
        });
      }),
    );
  }
}
