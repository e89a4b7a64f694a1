import type { Server } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { limitServerConnections } from '@mailyard/auth';
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

/** The refusal a client over its limit reads, when there is still a request to answer. */
const REFUSAL = {
  error: 'too_many_connections',
  message: 'Too many connections from your address at once; close some tabs or try again shortly',
};

/**
 * The HTTPS server's connection limits (limitServerConnections): over the total, a new
 * connection is closed at once, before its TLS handshake; over its address's limit, a
 * connection still gets its handshake, within the header deadline, and its first request
 * is answered `503 too_many_connections` and the connection closed.
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
  const fromProxy = (addr: string | undefined) =>
    addr !== undefined && opts.proxies.length > 0 && ipInNetworks(addr, opts.proxies);
  const limits = limitServerConnections(server, {
    perClient: opts.perClient,
    total: opts.total,
    listener: 'HTTPS',
    uncounted: fromProxy,
    onRefused: (limit) => deps.metrics.connectionsRefused.inc({ limit }),
    logger: deps.logger,
    ...(opts.now ? { now: opts.now } : {}),
  });

  const refuse = (reply: FastifyReply) =>
    reply.code(503).header('connection', 'close').header('retry-after', '10').send(REFUSAL);

  /** The first onRequest hook: refusals, the forwarded client's slot, the body deadline. */
  const onRequest = async (req: FastifyRequest, reply: FastifyReply) => {
    const socket = req.raw.socket;
    if (limits.isOver(socket)) return refuse(reply);
    if (fromProxy(socket.remoteAddress)) {
      const release = limits.admit(req.ip);
      if (!release) return refuse(reply);
      reply.raw.once('close', release);
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
