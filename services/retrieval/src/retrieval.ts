import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, Server as TlsServer } from 'node:tls';
import {
  followCertificate,
  MIN_TLS_VERSION,
  registerCertificateExpiry,
  tlsSourceFromConfig,
} from '@mailyard/certs';
import type { AddressInfo } from 'node:net';
import {
  ClientLimits,
  type Authenticator,
  type CredentialRevocations,
  type ServiceAuthorizer,
  LocalSlots,
  SharedSlots,
  type ConnectionSlots,
} from '@mailyard/auth';
import type { Bus } from '@mailyard/bus';
import { drainTime } from '@mailyard/config';
import { MailAccount, Quotas } from '@mailyard/mailstore';
import type { Logger, Registry } from '@mailyard/observability';
import type { Redis } from 'ioredis';
import type { RetrievalConfig } from './config.js';
import { ClientConnection, SessionLimits } from './connection.js';
import { NOTIFY_RETRY } from './imap/commands/notify.js';
import type { NotifyRetry } from './imap/context.js';
import { ImapSession, type ImapDeps } from './imap/session.js';
import { MessageCache } from './message-cache.js';
import { createMetrics } from './metrics.js';
import { ChangeNotifier } from './notifier.js';
import { Pop3Session, Pop3Locks } from './pop3/session.js';

export interface RetrievalDeps {
  bus: Bus;
  redis: Redis;
  auth: Authenticator;
  /** Ends sessions whose app password is revoked; started and closed with the service. */
  revocations: CredentialRevocations;
  /** The webmail's login acting for users (SASL PLAIN authzid); without it, refused. */
  serviceAuth?: ServiceAuthorizer;
  logger: Logger;
  registry: Registry;
  /**
   * Where this instance counts connections at once (per client address, per account, in
   * all); default: this process. Per client address and per account they are also
   * counted over every instance in Redis.
   */
  slots?: ConnectionSlots;
  /**
   * How NOTIFY tries again a store it could not read (default NOTIFY_RETRY: ten tries over
   * some minutes); a test shortens it to see the tries run out.
   */
  notifyRetry?: NotifyRetry;
}

export { NOTIFY_RETRY, type NotifyRetry };

export interface RetrievalService {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Bound ports (after start), for tests that listen on port 0. */
  ports(): { imap: number; imaps: number; pop3: number; pop3s: number };
  /** For the ready line: the same ports. */
  listening(): Record<string, number>;
}

/** How long a client has to read its goodbye before the connection is cut. */
const LAST_WORD_MS = 250;

/** MRA: IMAP (143/993) and POP3 (110/995) over the Maildir store; IDLE through mailbox.changed events. */
export function buildRetrieval(config: RetrievalConfig, deps: RetrievalDeps): RetrievalService {
  const { logger } = deps;
  const metrics = createMetrics(deps.registry);
  const tls = tlsSourceFromConfig(config, logger, 'retrieval');
  registerCertificateExpiry(deps.registry, 'retrieval', tls);
  const tlsOpts = { key: tls.current().key, cert: tls.current().cert, minVersion: MIN_TLS_VERSION };
  const notifier = new ChangeNotifier(deps.bus, config.publish_changes);
  const accounts = new Map<string, MailAccount>();
  const account = (name: string) => {
    let a = accounts.get(name);
    if (!a) {
      a = new MailAccount(config.maildir_root, name, config.myhostname);
      accounts.set(name, a);
    }
    return a;
  };
  const cache = new MessageCache({
    metrics: {
      fileReads: metrics.messageFileReads,
      indexAppends: metrics.indexAppends,
      indexRewrites: metrics.indexRewrites,
    },
    onError: (err, dir) => logger.warn({ err, dir }, 'index cache not written'),
  });
  const slots = deps.slots ?? new LocalSlots();
  // a client or an account has one limit however many instances it connects to;
  // max_connections is this instance's capacity, counted here alone
  const sharedSlots = new SharedSlots({
    redis: deps.redis,
    service: 'retrieval',
    local: slots,
    onError: (err) => logger.warn({ err }, 'connections counted on this instance only'),
  });
  const limits = new SessionLimits(config.mail_max_user_connections, sharedSlots);
  const clientLimits = new ClientLimits({
    slots: sharedSlots,
    service: 'retrieval',
    maxConnections: config.mail_max_ip_connections,
    ratePerMinute: config.mail_max_ip_connection_rate,
    exceptions: config.mail_ip_limit_exceptions,
    redis: deps.redis,
    onError: (err) => logger.warn({ err }, 'connection rate counted in this process only'),
  });
  const imapDeps: ImapDeps = {
    config,
    auth: deps.auth,
    revocations: deps.revocations,
    ...(deps.serviceAuth ? { serviceAuth: deps.serviceAuth } : {}),
    account,
    quotas: new Quotas(deps.redis, config.quota_storage),
    notifier,
    cache,
    bus: deps.bus,
    limits,
    tls: () => tls.context(),
    logger,
    metrics,
    notifyRetry: deps.notifyRetry ?? NOTIFY_RETRY,
  };
  const pop3Locks = new Pop3Locks(deps.redis);
  const sockets = new Set<Socket>();
  const sessions = new Set<ImapSession | Pop3Session>();
  /** Called when the last socket has closed (set at shutdown). */
  let onEmpty: (() => void) | null = null;

  const refuse = (protocol: 'imap' | 'pop3', socket: Socket, secure: boolean, limit: string) => {
    metrics.limitRejections.inc({ limit });
    // RFC 9051 §7.1.5 BYE; RFC 2449 / RFC 3206 SYS/TEMP: try again later
    new ClientConnection(socket, secure).end(
      protocol === 'imap'
        ? '* BYE [UNAVAILABLE] Too many connections from your address\r\n'
        : '-ERR [SYS/TEMP] Too many connections from your address\r\n',
    );
  };

  const accept = (protocol: 'imap' | 'pop3', secure: boolean) => (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => {
      sockets.delete(socket);
      if (!sockets.size) onEmpty?.();
    });
    socket.on('error', () => socket.destroy());
    socket.setNoDelay(true);
    // the socket is not read (no data listener) until the session starts
    void clientLimits.admit((socket.remoteAddress ?? '').replace(/^::ffff:/i, '')).then(async (a) => {
      if (!a.ok)
        return refuse(protocol, socket, secure, a.limit === 'connection-count' ? 'sessions-per-ip' : a.limit);
      if (socket.destroyed) return a.release();
      socket.on('close', a.release);
      if (!(await slots.take('sessions', config.max_connections)))
        return refuse(protocol, socket, secure, 'sessions');
      socket.on('close', () => slots.give('sessions'));
      if (socket.destroyed) return;
      metrics.sessions.inc({ protocol });
      metrics.activeSessions.inc({ protocol });
      const conn = new ClientConnection(socket, secure);
      const session =
        protocol === 'imap'
          ? new ImapSession(conn, imapDeps)
          : new Pop3Session(conn, { ...imapDeps, locks: pop3Locks });
      sessions.add(session);
      socket.on('close', () => sessions.delete(session));
      session.start();
    });
  };

  /** Resolves true when every client socket has closed, false after `ms`. */
  const allClosed = (ms: number) =>
    new Promise<boolean>((resolve) => {
      if (!sockets.size) return resolve(true);
      const timer = setTimeout(() => resolve(false), ms);
      onEmpty = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });

  const servers: { name: string; server: Server; port: number }[] = [
    { name: 'imap', server: createServer(accept('imap', false)), port: config.imap_port },
    { name: 'imaps', server: createTlsServer(tlsOpts, accept('imap', true)), port: config.imaps_port },
    { name: 'pop3', server: createServer(accept('pop3', false)), port: config.pop3_port },
    { name: 'pop3s', server: createTlsServer(tlsOpts, accept('pop3', true)), port: config.pop3s_port },
  ];
  for (const s of servers) {
    if (s.server instanceof TlsServer) followCertificate(tls, s.server);
    s.server.on('tlsClientError', () => undefined);
    s.server.on('error', (err) => logger.error({ err, listener: s.name }, 'listener error'));
  }

  return {
    async start() {
      await notifier.start();
      deps.revocations.start();
      for (const s of servers) {
        await new Promise<void>((resolve, reject) => {
          s.server.once('error', reject);
          s.server.listen(s.port, config.listen_address, () => {
            s.server.off('error', reject);
            resolve();
          });
        });
      }
      // the service's one ready line at info says the ports (runtime's runMain)
      logger.debug({ ports: this.ports(), root: config.maildir_root }, 'retrieval listening');
    },
    async stop() {
      // no more clients; net.Server's close callback would wait for the connected ones
      for (const s of servers) s.server.close();
      // BYE / -ERR to every client between commands now, to the others after their command
      for (const s of sessions) s.shutdown();
      if (!(await allClosed(drainTime(config.shutdown_grace)))) {
        for (const s of sessions) s.shutdown(true);
        if (!(await allClosed(LAST_WORD_MS))) for (const s of sockets) s.destroy();
      }
      sharedSlots.close();
      deps.revocations.close();
      tls.close();
      await cache.flush();
    },
    listening() {
      return { ...this.ports() };
    },
    ports() {
      const p = (i: number) => (servers[i]!.server.address() as AddressInfo | null)?.port ?? 0;
      return { imap: p(0), imaps: p(1), pop3: p(2), pop3s: p(3) };
    },
  };
}
