import type { FastifyInstance } from 'fastify';
import { sessionOf, type Ctx } from './context.js';
import { SESSION_COOKIE } from './sessions.js';

/** Comment lines keep proxies from closing a quiet stream. */
const HEARTBEAT_MS = 25_000;
/** How often a stream checks that its session still lives (idle, absolute timeout, logout). */
const SESSION_CHECK_MS = 15_000;
/**
 * Streams one session may hold at once: one per open tab of the webmail, which a browser
 * bounds itself (six connections per site over HTTP/1.1). Each holds a socket, timers
 * and a session check. Past the bound a new stream ends the session's oldest: most often
 * one whose tab is long gone (a laptop that slept, a network that changed) and that no
 * write has yet found dead. A browser's EventSource never retries a refused stream, so
 * refusing the new one would leave its tab without news for good.
 */
export const STREAMS_PER_SESSION = 8;

/**
 * GET /api/events: a text/event-stream of the account's mail events (MailNotifier). It does
 * not keep the session alive: only requests the user makes do. It ends with `logout` when
 * the session does.
 */
export function registerEventRoutes(app: FastifyInstance, ctx: Ctx): void {
  const streams = new Set<() => void>();
  /** Streams open per session, the oldest first. */
  const perSession = new Map<string, (() => void)[]>();
  // before the server waits for its connections to end: streams never end by themselves
  app.addHook('preClose', async () => {
    for (const end of [...streams]) end();
  });

  app.get('/api/events', { config: { passive: true } }, (req, reply) => {
    const { account } = sessionOf(req);
    const sessionId = req.cookies[SESSION_COOKIE] ?? '';
    const res = reply.raw;
    reply.hijack();
    res.writeHead(200, {
      ...(reply.getHeaders() as Record<string, string>),
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
    });
    const send = (event: string, data: unknown) =>
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    res.write('retry: 3000\n\n');
    send('ready', { account });
    const unsubscribe = ctx.notifier.subscribe(account, (e) => send(e.type, e));
    ctx.metrics.eventStreams.inc();
    const heartbeat = setInterval(() => res.write(': ping\n\n'), HEARTBEAT_MS);
    const check = setInterval(() => {
      ctx.sessions.get(sessionId, req.ip, false).then(
        (s) => {
          if (!s) {
            send('logout', {});
            end();
          }
        },
        () => undefined,
      );
    }, SESSION_CHECK_MS);
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      clearInterval(heartbeat);
      clearInterval(check);
      unsubscribe();
      streams.delete(end);
      const mine = perSession.get(sessionId) ?? [];
      const at = mine.indexOf(end);
      if (at >= 0) mine.splice(at, 1);
      if (!mine.length) perSession.delete(sessionId);
      ctx.metrics.eventStreams.dec();
      res.end();
    };
    streams.add(end);
    const mine = perSession.get(sessionId) ?? [];
    perSession.set(sessionId, mine);
    mine.push(end);
    if (mine.length > STREAMS_PER_SESSION) mine[0]!();
    req.raw.on('close', end);
  });
}
