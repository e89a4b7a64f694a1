import type { Server, Socket } from 'node:net';
import { clientKey } from './lockout.js';
import { LocalSlots } from './client-limits.js';

export type RefusedLimit = 'client' | 'total';

export interface ServerLimitsOptions {
  /** Connections at once from one client address, IPv6 by its /64 (nginx: limit_conn); 0: no limit. */
  perClient: number;
  /** Connections at once in all (nginx: worker_connections); 0: no limit. */
  total: number;
  /** What the log calls the listener (`HTTPS`, `HTTP`). */
  listener: string;
  /** Connections not counted by their own address (a trusted proxy's, which carry many clients). */
  uncounted?: (address: string) => boolean;
  /** Every refusal, for a metric (the log says it once a minute per client). */
  onRefused?: (limit: RefusedLimit) => void;
  logger: { warn(obj: object, msg: string): void };
  now?: () => number;
}

export interface ServerLimits {
  /** Whether this connection came over its address's limit: its first request is to be refused. */
  isOver(socket: Socket): boolean;
  /**
   * A slot for a client the connection does not name (the address a proxy forwards):
   * its release, or null when the client holds its limit already (refusal counted).
   */
  admit(address: string): (() => void) | null;
}

/** A client refused again within this long is not logged again (the metric counts every refusal). */
const LOG_INTERVAL_MS = 60_000;

/**
 * Connection limits of an internet-facing HTTP(S) server, as nginx's limit_conn and
 * worker_connections: over the total, a new connection is closed at once (refusing must
 * cost less than serving); over its address's limit, a connection is kept until its first
 * request, which the server answers 503 (isOver), so that the client reads why. Such a
 * connection holds no place in the total: one address opening connection after connection
 * would otherwise fill it and shut out every other client. Those kept to be refused are
 * at most as many as the total, of all addresses; past that one is closed at once. Every
 * refusal is counted, and logged at most once a minute per client.
 */
export function limitServerConnections(server: Server, opts: ServerLimitsOptions): ServerLimits {
  const now = opts.now ?? Date.now;
  const slots = new LocalSlots();
  // connections over their address's limit, by remote address and port (one TCP connection)
  const over = new Set<string>();
  // connections admitted, the ones the total counts
  let admitted = 0;
  const logged = new Map<string, number>();
  const id = (socket: Socket) => `${socket.remoteAddress}|${socket.remotePort}`;

  const refused = (limit: RefusedLimit, client: string) => {
    opts.onRefused?.(limit);
    const t = now();
    if (t - (logged.get(client) ?? -Infinity) < LOG_INTERVAL_MS) return;
    if (logged.size > 10_000) for (const [c, at] of logged) if (t - at >= LOG_INTERVAL_MS) logged.delete(c);
    logged.set(client, t);
    opts.logger.warn(
      { client, limit, perClient: opts.perClient, total: opts.total },
      limit === 'total'
        ? `${opts.listener} connection refused: the server holds its most connections`
        : `${opts.listener} connection refused: too many from this client`,
    );
  };

  // Node closes a connection past maxConnections before it makes a socket of it, the
  // cheapest refusal: when both the admitted and those kept to be refused are full
  if (opts.total > 0) server.maxConnections = opts.perClient ? 2 * opts.total : opts.total;
  server.on('drop', (data?: { remoteAddress?: string }) =>
    refused('total', clientKey(data?.remoteAddress ?? 'unknown')),
  );
  const admit = (socket: Socket, key: string, release?: () => void) => {
    if (opts.total > 0 && admitted >= opts.total) {
      release?.();
      socket.destroy();
      refused('total', key);
      return;
    }
    admitted++;
    socket.once('close', () => {
      admitted--;
      release?.();
    });
  };
  server.on('connection', (socket: Socket) => {
    const addr = socket.remoteAddress;
    const key = clientKey(addr ?? 'unknown');
    if (!opts.perClient || addr === undefined || opts.uncounted?.(addr)) return admit(socket, key);
    if (slots.takeNow(key, opts.perClient)) return admit(socket, key, () => slots.give(key));
    if (opts.total > 0 && over.size >= opts.total) {
      socket.destroy();
      refused('client', key);
      return;
    }
    const conn = id(socket);
    over.add(conn);
    socket.once('close', () => over.delete(conn));
    refused('client', key);
  });

  return {
    isOver: (socket) => over.has(id(socket)),
    admit(address) {
      if (!opts.perClient) return () => undefined;
      const key = clientKey(address);
      if (!slots.takeNow(key, opts.perClient)) {
        refused('client', key);
        return null;
      }
      return () => slots.give(key);
    },
  };
}
