import type { Server, Socket } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { LocalSlots, clientKey } from '@mailyard/auth';
import { ipInNetworks, type Cidr } from '@mailyard/config';
import type { Logger } from '@mailyard/observability';
import type { WebmailMetrics } from './metrics.js';

export interface HttpLimitsOptions {
  /** Connections at once from one client address (nginx: limit_conn); 0: no limit. */
  perClient: number;
  /** Connections at once in all (nginx: worker_connections); 0: no limit. */
  total: number;
  /** Longest wait for the next piece of a request's body (nginx: client_body_timeout). */
  bodyTimeoutMs: number;
  /** Reverse proxies: their connections carry many clients, each named by X-Forwarded-For. */
  proxies: readonly Cidr[];
  now?: () => number;
}

/** A client refused again within this long is not logged again (the metric counts every refusal). */
const LOG_INTERVAL_MS = 60_000;

/** The refusal a client over its limit reads, when there is still a request to answer. */
const REFUSAL = {
  error: 'too_many_connections',
  message: 'Too many connections from your address at once; close some tabs or try again shortly',
};

export type RefusedLimit = 'client' | 'total';

/**
 * The HTTPS server's connection limits, as nginx's limit_conn and worker_connections:
 * over the total, a new connection is closed at once (Node's maxConnections: nothing can
 * be said before the TLS handshake, and refusing must cost less than serving); over its
 * address's limit, a connection still gets its handshake, within the header deadline,
 * and its first request is answered `503 too_many_connections` and the connection closed.
 *
 * A connection from a trusted proxy carries many clients: it is not counted by its own
 * address, and each request it brings counts instead against the address X-Forwarded-For
 * names, while it runs (what the proxy holds open for that client).
 *
 * Also the body deadline (nginx's client_body_timeout): between two pieces of a request's
 * body, not over all of it, so a large attachment still uploads on a slow line that moves.
 */
export function httpLimits(
  server: Server,
  opts: HttpLimitsOptions,
  deps: { logger: Logger; metrics: WebmailMetrics },
) {
  const now = opts.now ?? Date.now;
  const slots = new LocalSlots();
  // connections over their address's limit, by remote address and port (one TCP connection)
  const over = new Set<string>();
  const logged = new Map<string, number>();
  const fromProxy = (addr: string | undefined) =>
    addr !== undefined && opts.proxies.length > 0 && ipInNetworks(addr, opts.proxies);

  const refused = (limit: RefusedLimit, client: string) => {
    deps.metrics.connectionsRefused.inc({ limit });
    const t = now();
    if (t - (logged.get(client) ?? -Infinity) < LOG_INTERVAL_MS) return;
    if (logged.size > 10_000) for (const [c, at] of logged) if (t - at >= LOG_INTERVAL_MS) logged.delete(c);
    logged.set(client, t);
    deps.logger.warn(
      { client, limit, perClient: opts.perClient, total: opts.total },
      limit === 'total'
        ? 'HTTPS connection refused: the server holds its most connections'
        : 'HTTPS connection refused: too many from this client',
    );
  };

  if (opts.total > 0) server.maxConnections = opts.total;
  // Node closes a connection over maxConnections itself and says so here
  server.on('drop', (data?: { remoteAddress?: string }) =>
    refused('total', clientKey(data?.remoteAddress ?? 'unknown')),
  );
  server.on('connection', (socket: Socket) => {
    const addr = socket.remoteAddress;
    if (!opts.perClient || addr === undefined || fromProxy(addr)) return;
    const key = clientKey(addr);
    if (slots.takeNow(key, opts.perClient)) {
      socket.once('close', () => slots.give(key));
      return;
    }
    const id = `${addr}|${socket.remotePort}`;
    over.add(id);
    socket.once('close', () => over.delete(id));
    refused('client', key);
  });

  const refuse = (reply: FastifyReply) =>
    reply.code(503).header('connection', 'close').header('retry-after', '10').send(REFUSAL);

  /** The first onRequest hook: refusals, the forwarded client's slot, the body deadline. */
  const onRequest = async (req: FastifyRequest, reply: FastifyReply) => {
    const socket = req.raw.socket;
    if (over.has(`${socket.remoteAddress}|${socket.remotePort}`)) return refuse(reply);
    if (opts.perClient && fromProxy(socket.remoteAddress)) {
      const key = clientKey(req.ip);
      if (!slots.takeNow(key, opts.perClient)) {
        refused('client', key);
        return refuse(reply);
      }
      reply.raw.once('close', () => slots.give(key));
    }
    bodyDeadline(req, reply, opts.bodyTimeoutMs);
    return undefined;
  };
  return { onRequest };
}

/**
 * While a request's body is read, the socket may be silent at most `ms` between two reads;
 * then it is closed (Node closes a socket whose timeout nobody answers). The deadline ends
 * with the body: the handler's own work (a send waits on the msa) and the keep-alive wait
 * that Node times itself are not cut by it.
 */
function bodyDeadline(req: FastifyRequest, reply: FastifyReply, ms: number): void {
  const { headers } = req.raw;
  const hasBody =
    headers['transfer-encoding'] !== undefined ||
    (headers['content-length'] !== undefined && headers['content-length'] !== '0');
  if (!hasBody || req.raw.complete) return;
  const socket = req.raw.socket;
  socket.setTimeout(ms);
  req.raw.once('end', () => {
    // after the answer, the socket's timeout is Node's keep-alive wait: leave it
    if (!reply.raw.writableFinished) socket.setTimeout(0);
  });
}
