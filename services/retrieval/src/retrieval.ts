import { createServer, type Server, type Socket } from 'node:net';
import { createSecureContext, createServer as createTlsServer } from 'node:tls';
import type { AddressInfo } from 'node:net';
import type { Authenticator, ServiceAuthorizer } from '@mailyard/auth';
import type { Bus } from '@mailyard/bus';
import { loadTlsMaterial } from '@mailyard/config';
import { MailAccount, Quotas } from '@mailyard/mailstore';
import type { Logger, Registry } from '@mailyard/observability';
import type { Redis } from 'ioredis';
import type { RetrievalConfig } from './config.js';
import { ClientConnection, SessionLimits } from './connection.js';
import { ImapSession, type ImapDeps } from './imap/session.js';
import { MessageCache } from './message-cache.js';
import { createMetrics } from './metrics.js';
import { ChangeNotifier } from './notifier.js';
import { Pop3Session, Pop3Locks } from './pop3/session.js';

export interface RetrievalDeps {
  bus: Bus;
  redis: Redis;
  auth: Authenticator;
  /** The webmail's login acting for users (SASL PLAIN authzid); without it, refused. */
  serviceAuth?: ServiceAuthorizer;
  logger: Logger;
  registry: Registry;
}

export interface RetrievalService {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Bound ports (after start), for tests that listen on port 0. */
  ports(): { imap: number; imaps: number; pop3: number; pop3s: number };
}

/** MRA: IMAP (143/993) and POP3 (110/995) over the Maildir store; IDLE through mailbox.changed events. */
export function buildRetrieval(config: RetrievalConfig, deps: RetrievalDeps): RetrievalService {
  const { logger } = deps;
  const metrics = createMetrics(deps.registry);
  const tlsMaterial = loadTlsMaterial({
    certFile: config.tls_cert_file,
    keyFile: config.tls_key_file,
    hostname: config.myhostname,
  });
  if (tlsMaterial.selfSigned) logger.warn('no TLS_CERT_FILE/TLS_KEY_FILE: using a self-signed certificate');
  const tlsOpts = { key: tlsMaterial.key, cert: tlsMaterial.cert, minVersion: 'TLSv1.2' as const };
  const secureContext = createSecureContext(tlsOpts);
  const notifier = new ChangeNotifier(deps.bus, logger, config.publish_changes);
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
    onError: (err, dir) => logger.warn({ err: (err as Error).message, dir }, 'index cache not written'),
  });
  const limits = new SessionLimits(config.mail_max_ip_connections, config.mail_max_user_connections);
  const imapDeps: ImapDeps = {
    config,
    auth: deps.auth,
    ...(deps.serviceAuth ? { serviceAuth: deps.serviceAuth } : {}),
    account,
    quotas: new Quotas(deps.redis, config.quota_storage),
    notifier,
    cache,
    bus: deps.bus,
    limits,
    tls: secureContext,
    logger,
    metrics,
  };
  const pop3Locks = new Pop3Locks(deps.redis);
  const sockets = new Set<Socket>();
  let total = 0;

  const accept = (protocol: 'imap' | 'pop3', secure: boolean) => (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.setNoDelay(true);
    const conn = new ClientConnection(socket, secure);
    if (total >= config.max_connections || !limits.openIp(conn.ip)) {
      metrics.limitRejections.inc({ limit: 'sessions-per-ip' });
      conn.end(
        protocol === 'imap' ? '* BYE Too many connections\r\n' : '-ERR [SYS/TEMP] Too many connections\r\n',
      );
      return;
    }
    total++;
    socket.on('close', () => total--);
    metrics.sessions.inc({ protocol });
    metrics.activeSessions.inc({ protocol });
    if (protocol === 'imap') new ImapSession(conn, imapDeps).start();
    else new Pop3Session(conn, { ...imapDeps, locks: pop3Locks }).start();
  };

  const servers: { name: string; server: Server; port: number }[] = [
    { name: 'imap', server: createServer(accept('imap', false)), port: config.imap_port },
    { name: 'imaps', server: createTlsServer(tlsOpts, accept('imap', true)), port: config.imaps_port },
    { name: 'pop3', server: createServer(accept('pop3', false)), port: config.pop3_port },
    { name: 'pop3s', server: createTlsServer(tlsOpts, accept('pop3', true)), port: config.pop3s_port },
  ];
  for (const s of servers) {
    s.server.on('tlsClientError', () => undefined);
    s.server.on('error', (err) => logger.error({ err: err.message, listener: s.name }, 'listener error'));
  }

  return {
    async start() {
      await notifier.start();
      for (const s of servers) {
        await new Promise<void>((resolve, reject) => {
          s.server.once('error', reject);
          s.server.listen(s.port, config.listen_address, () => {
            s.server.off('error', reject);
            resolve();
          });
        });
      }
      logger.info({ ports: this.ports(), root: config.maildir_root }, 'retrieval listening');
    },
    async stop() {
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.server.close(() => r()))));
      const deadline = Date.now() + config.shutdown_grace;
      while (sockets.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const s of sockets) s.destroy();
      await cache.flush();
    },
    ports() {
      const p = (i: number) => (servers[i]!.server.address() as AddressInfo | null)?.port ?? 0;
      return { imap: p(0), imaps: p(1), pop3: p(2), pop3s: p(3) };
    },
  };
}
