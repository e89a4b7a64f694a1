import type { ParkedSession } from './deliver.js';

/** Postfix's smtp_connection_cache_time_limit, smtp_connection_reuse_time_limit and _count_limit. */
export interface ConnectionCacheLimits {
  /** An idle session is closed (QUIT) after this long. 0 turns the cache off. */
  idleMs: number;
  /** A session is not reused once it is this old. */
  reuseTimeMs: number;
  /** A session carries at most this many messages; 0: no limit. */
  reuseCount: number;
}

/** A parked session with the destination slot it keeps (see DestinationLimits). */
export interface Parked {
  session: ParkedSession;
  release: () => Promise<void>;
}

interface Idle extends Parked {
  timer: NodeJS.Timeout;
}

/**
 * SMTP sessions kept open between messages to the same destination, as Postfix's
 * connection cache: after a message the session is parked here instead of QUIT, and the
 * next message for the destination takes it, checks it with RSET and goes straight to
 * MAIL FROM, skipping the connect, greeting, EHLO, TLS handshake and AUTH.
 *
 * A parked session keeps its destination slot, so open sessions (in use or idle, of
 * every instance) never exceed the destination's concurrency limit; the message that
 * takes the session takes the slot with it. A session idle for `idleMs` is closed with
 * QUIT and its slot released; one the server closed meanwhile is dropped when found.
 */
export class ConnectionCache {
  private readonly idle = new Map<string, Idle[]>();
  private closed = false;

  constructor(private readonly limits: ConnectionCacheLimits) {}

  get enabled(): boolean {
    return this.limits.idleMs > 0 && !this.closed;
  }

  /** The most recently parked session of `destination`, with its slot, or null. */
  take(destination: string): Parked | null {
    const entry = this.idle.get(destination)?.at(-1);
    return entry ? this.unpark(destination, entry) : null;
  }

  /**
   * A parked session of any destination whose key is one of `keys`: the same server
   * under the same TLS policy, credentials and source address (domains that share an
   * MX). It comes with its own destination's slot, which the caller releases.
   */
  takeMatching(keys: ReadonlySet<string>): Parked | null {
    for (const [destination, list] of this.idle) {
      const entry = list.findLast((e) => keys.has(e.session.key));
      if (entry) return this.unpark(destination, entry);
    }
    return null;
  }

  /** Takes an entry out of the idle list, its timer stopped. */
  private unpark(destination: string, entry: Idle): Parked {
    const list = this.idle.get(destination)!;
    list.splice(list.indexOf(entry), 1);
    if (!list.length) this.idle.delete(destination);
    clearTimeout(entry.timer);
    return { session: entry.session, release: entry.release };
  }

  /**
   * Parks a session after a message, with the slot it holds; false when it is not kept
   * (too old, too many messages, broken, or the cache is off or closed): the caller
   * QUITs it and releases the slot.
   */
  put(destination: string, parked: Parked): boolean {
    const { client } = parked.session;
    if (!this.enabled || !client.usable) return false;
    if (Date.now() - client.openedAt >= this.limits.reuseTimeMs) return false;
    if (this.limits.reuseCount > 0 && client.transactions >= this.limits.reuseCount) return false;
    const entry: Idle = {
      ...parked,
      timer: setTimeout(() => void expire(this.unpark(destination, entry)), this.limits.idleMs),
    };
    entry.timer.unref();
    let list = this.idle.get(destination);
    if (!list) this.idle.set(destination, (list = []));
    list.push(entry);
    return true;
  }

  /** QUITs every idle session and releases its slot; nothing is parked afterwards. */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.idle.values()].flat();
    this.idle.clear();
    await Promise.all(
      all.map((entry) => {
        clearTimeout(entry.timer);
        return expire(entry);
      }),
    );
  }
}

async function expire(entry: Parked): Promise<void> {
  try {
    await entry.session.client.quit();
  } finally {
    await entry.release();
  }
}
