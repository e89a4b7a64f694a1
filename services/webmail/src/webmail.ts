import { existsSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import fastifyCookie from '@fastify/cookie';
import fastifyHelmet from '@fastify/helmet';
import fastifyStatic from '@fastify/static';
import type { Redis } from 'ioredis';
import {
  AppPasswords,
  LoginHistory,
  serviceLoginFromConfig,
  type Authenticator,
  type TwoFactor,
} from '@mailyard/auth';
import { ConfigError, drainTime, ipInNetworks, parseCidr, parseHostPort, type Cidr } from '@mailyard/config';
import {
  createAcmeIssuer,
  createHttpChallengeServer,
  followCertificate,
  MIN_TLS_VERSION,
  registerCertificateExpiry,
  tlsSourceFromConfig,
} from '@mailyard/certs';
import { Operations } from '@mailyard/admin';
import type { Directory } from '@mailyard/directory';
import { delayQueuesOf, type QueueAdminDeps } from '@mailyard/queue-admin';
import type { Logger, Registry } from '@mailyard/observability';
import type { WebmailConfig } from './config.js';
import { folderHelpers, type Ctx, type SecondFactor } from './context.js';
import { ApiError, UpstreamError, errors, isRedisFailure } from './errors.js';
import { ImapPool } from './imap-pool.js';
import { httpLimits } from './http-limits.js';
import { createMetrics } from './metrics.js';
import { MailNotifier } from './notifier.js';
import { registerAccountRoutes } from './routes-account.js';
import { registerAdminRoutes } from './routes-admin.js';
import { registerAdminMailRoutes } from './routes-admin-mail.js';
import { registerAdminDnsRoutes } from './routes-admin-dns.js';
import { registerAutoconfigRoutes } from './autoconfig.js';
import { registerMtaStsRoutes } from './mta-sts.js';
import { registerAuthRoutes } from './routes-auth.js';
import { registerComposeRoutes } from './routes-compose.js';
import { registerEventRoutes } from './routes-events.js';
import { registerFolderRoutes } from './routes-folders.js';
import { registerMailRoutes } from './routes-mail.js';
import { SESSION_COOKIE, SessionStore, sameToken } from './sessions.js';

export interface WebmailDeps {
  redis: Redis;
  directory: Directory;
  /** The shared login check (packages/auth): lockout counted across every service. */
  authenticator: Authenticator;
  logger: Logger;
  registry: Registry;
  /** Two-factor login (TOTP): the second step of the login and its enrolment on the account page. */
  twoFactor?: TwoFactor;
  /** Another second step instead (tests); default: `twoFactor`. */
  secondFactor?: SecondFactor;
  /** The broker, for the admin console's queue page (its inspect API); without it the page says unavailable. */
  bus?: QueueAdminDeps['bus'];
  now?: () => number;
}

export interface Webmail {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** The HTTPS port (after start). */
  readonly port: number;
  /** For the ready line: `{ https }`, and `http` where it answers ACME challenges. */
  listening(): Record<string, number>;
  readonly app: FastifyInstance;
  /** The session's IMAP connections, per account (tests). */
  imapConnections(account: string): number;
  /** New mail of the account is being watched (IDLE in place) for its event streams (tests). */
  watching(account: string): boolean;
}

/** Where `pnpm build` puts the front end: dist/public beside the bundle, or beside src/ in development. */
function defaultAssetsDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return here.endsWith('dist') ? join(here, 'public') : join(here, '..', 'dist', 'public');
}

/** The page CSP: our own scripts, styles and images only, never inline script or another site. */
const PAGE_CSP = {
  defaultSrc: ["'self'"],
  scriptSrc: ["'self'"],
  styleSrc: ["'self'"],
  imgSrc: ["'self'", 'data:', 'blob:'],
  fontSrc: ["'self'"],
  connectSrc: ["'self'"],
  frameSrc: ["'self'"],
  frameAncestors: ["'none'"],
  objectSrc: ["'none'"],
  baseUri: ["'none'"],
  formAction: ["'self'"],
  workerSrc: ["'none'"],
  manifestSrc: ["'self'"],
};

/**
 * What the router refuses before any route or hook runs (a path whose escapes do not
 * decode, a parameter past maxParamLength): answered in the API's own form, with the
 * headers helmet gives every other answer (its hook does not run for these), a CSP that
 * lets nothing load among them.
 */
function routerRefusal(err: FastifyError, _req: FastifyRequest, reply: FastifyReply): void {
  const tooLong = err.code === 'FST_ERR_MAX_PARAM_LENGTH';
  void reply
    .code(tooLong ? 414 : (err.statusCode ?? 400))
    .headers({
      'content-security-policy': "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
      'cross-origin-resource-policy': 'same-origin',
      'strict-transport-security': 'max-age=15552000',
      'cache-control': 'no-store',
    })
    .send({
      error: tooLong ? 'uri_too_long' : 'bad_request',
      message: tooLong
        ? 'A part of the address of this request is too long'
        : 'The address of this request is not valid',
    });
}

/** A request the router matched to a route of the JSON API, however its path was written. */
const isApiRoute = (req: FastifyRequest): boolean => req.routeOptions.url?.startsWith('/api/') ?? false;

/**
 * Whether a request's path is under the JSON API as the router reads it, matched or not:
 * `/%61pi/x` and `https://host/api/x` are `/api/x`.
 */
function inApi(url: string): boolean {
  try {
    return decodeURIComponent(new URL(url, 'http://localhost').pathname).startsWith('/api/');
  } catch {
    return url.startsWith('/api/');
  }
}

/**
 * The web client: a fastify app on WEBMAIL_PORT (HTTPS with the platform's certificate)
 * serving the single-page front end and its JSON API. It reads through IMAP and sends
 * through submission like any mail client, with its own service login acting for the
 * logged-in user; sessions live in Redis, so any number of instances serve the same users.
 */
export function buildWebmail(config: WebmailConfig, deps: WebmailDeps): Webmail {
  const { logger } = deps;
  const now = deps.now ?? Date.now;
  const service = serviceLoginFromConfig(config);
  if (!service) {
    throw new ConfigError([
      'SERVICE_LOGIN_PASSWORD: the webmail needs the service login secret that retrieval and msa accept (or SERVICE_LOGIN_PASSWORD_FILE)',
    ]);
  }
  const tls = tlsSourceFromConfig(config, logger, 'webmail');
  registerCertificateExpiry(deps.registry, 'webmail', tls);
  // the platform's ACME issuer: it writes TLS_CERT_FILE/TLS_KEY_FILE, which every service reloads
  const issuer = config.acme_enabled
    ? createAcmeIssuer(
        {
          directoryUrl: config.acme_directory_url,
          email: config.acme_email,
          domains: config.acme_domains.length ? config.acme_domains : [config.myhostname],
          challenge: config.acme_challenge,
          dnsHook: config.acme_dns_hook,
          certFile: config.tls_cert_file!,
          keyFile: config.tls_key_file!,
          renewBefore: config.acme_renew_before,
          checkInterval: config.acme_check_interval,
          caFile: config.acme_ca_file,
        },
        { redis: deps.redis, logger },
      )
    : null;
  const ca = config.upstream_tls_ca_file ? readFileSync(config.upstream_tls_ca_file) : undefined;
  const upstream = (text: string) => {
    const hp = parseHostPort(text, 0);
    if (!hp) throw new Error(`bad host:port ${text}`);
    return {
      host: hp.host,
      port: hp.port,
      servername: config.upstream_tls_servername ?? config.myhostname,
      rejectUnauthorized: config.upstream_tls_verify,
      ...(ca ? { ca } : {}),
      service: { name: service.name, password: service.password },
    };
  };
  const metrics = createMetrics(deps.registry);
  const challenges =
    config.webmail_http_port === undefined
      ? null
      : createHttpChallengeServer({
          redis: deps.redis,
          hostname: config.myhostname,
          logger,
          onRefused: (limit) => metrics.challengeConnectionsRefused.inc({ limit }),
        });
  const imap = upstream(config.imap_server[0]!);
  const pool = new ImapPool({
    target: imap,
    maxPerAccount: config.imap_connections_per_user,
    idleMs: config.imap_idle_timeout,
    timeoutMs: config.imap_timeout,
    logger,
    metrics,
  });
  const sessions = new SessionStore(
    deps.redis,
    {
      idleMs: config.session_idle_timeout,
      absoluteMs: config.session_absolute_timeout,
      renewalGraceMs: config.session_renewal_grace,
    },
    now,
  );
  const notifier = new MailNotifier(imap, logger, metrics);
  const ctx: Ctx = {
    config,
    redis: deps.redis,
    directory: deps.directory,
    authenticator: deps.authenticator,
    secondFactor: deps.secondFactor ?? deps.twoFactor ?? null,
    twoFactor: deps.twoFactor ?? null,
    appPasswords: new AppPasswords(deps.redis),
    history: new LoginHistory(deps.redis),
    sessions,
    pool,
    imap,
    submit: upstream(config.submission_server[0]!),
    notifier,
    logger,
    metrics,
    // base64 and line breaks make attachments ~1.37 times larger; leave room for the text
    attachmentLimit: Math.max(0, Math.floor((config.message_size_limit - 256 * 1024) / 1.37)),
    now,
    ...folderHelpers(pool, now),
    // the console's actions, audited as the admin who asked (Operations.as per request)
    operations: new Operations(deps.redis, 'webmail', {
      directory: deps.directory,
      // the change was made and is answered as made; the lost entry is said and counted
      onAuditFailure: (err, entry) => {
        metrics.auditFailures.inc();
        logger.error({ err, audit: entry }, 'admin change made, but its audit entry was not written');
      },
    }),
    queue: deps.bus
      ? {
          bus: deps.bus,
          redis: deps.redis,
          ...(config.outbound_retry_schedule.length
            ? { delayQueues: delayQueuesOf(config.outbound_retry_schedule) }
            : {}),
        }
      : null,
  };

  const proxies: Cidr[] = config.trusted_proxies.map((n) => parseCidr(n)).filter((c) => c !== null);
  const app = Fastify({
    logger: false,
    https: {
      key: tls.current().key,
      cert: tls.current().cert,
      minVersion: MIN_TLS_VERSION,
      // a client that connects and never finishes its handshake (nginx times it as the headers)
      handshakeTimeout: config.client_header_timeout,
      headersTimeout: config.client_header_timeout,
      // how often Node looks for requests past their header deadline (default 30 s)
      connectionsCheckingInterval: Math.min(30_000, Math.ceil(config.client_header_timeout / 4)),
    },
    // the body has its deadline between reads (httpLimits); none over the whole request,
    // which would cut short a large upload on a slow line
    requestTimeout: 0,
    keepAliveTimeout: config.keepalive_timeout,
    trustProxy: proxies.length ? (addr: string) => ipInNetworks(addr, proxies) : false,
    bodyLimit: 8 * 1024 * 1024,
    // ids come from us; a request id in logs ties a browser report to a line
    requestIdHeader: false,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    // an address in the path (the console's /api/admin/accounts/:address) may be 320
    // characters, each up to 12 when a UTF-8 one is percent-encoded; the default of 100
    // refused a long address before any route saw it
    routerOptions: { maxParamLength: 4096 },
    frameworkErrors: routerRefusal,
  });
  const limits = httpLimits(
    app.server,
    {
      perClient: config.client_connection_limit,
      total: config.connection_limit,
      bodyTimeoutMs: config.client_body_timeout,
      proxies,
    },
    { logger, metrics },
  );
  app.addHook('onRequest', limits.onRequest);

  void app.register(fastifyCookie);
  void app.register(fastifyHelmet, {
    contentSecurityPolicy: { useDefaults: false, directives: PAGE_CSP },
    referrerPolicy: { policy: 'no-referrer' },
    crossOriginResourcePolicy: { policy: 'same-origin' },
    crossOriginOpenerPolicy: { policy: 'same-origin' },
    crossOriginEmbedderPolicy: false,
    strictTransportSecurity: { maxAge: 15552000, includeSubDomains: false },
  });

  app.decorateRequest('session', null);
  app.decorateRequest('sessionId', null);

  // Sessions and CSRF for every API route, before its body is even read. The route the
  // router matched says which, not the request's URL as sent: `/%61pi/login` and
  // `https://host/api/login` (RFC 9112 §3.2.2) reach the same route as `/api/login`.
  app.addHook('preParsing', async (req) => {
    if (!isApiRoute(req) || req.is404) return;
    // Fetch metadata (every current browser): a request another site made is refused outright
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin' && site !== 'none') throw errors.crossSite();
    const access = req.routeOptions.config.access ?? 'session';
    const changes = req.method !== 'GET' && req.method !== 'HEAD';
    if (access === 'public') return;
    if (access === 'login') {
      if (
        changes &&
        !sameToken(req.headers['x-csrf-token'] as string | undefined, req.cookies['__Host-mailyard_login'])
      )
        throw errors.csrf();
      return;
    }
    const id = req.cookies[SESSION_COOKIE];
    const session = await sessions.find(id, req.ip, !req.routeOptions.config.passive);
    if (session === 'ended') throw errors.sessionEnded();
    if (!session) throw errors.notLoggedIn();
    if (access === 'session' && session.stage !== 'complete') throw errors.secondFactorRequired();
    if (changes && !sameToken(req.headers['x-csrf-token'] as string | undefined, session.csrf))
      throw errors.csrf();
    req.session = session;
    req.sessionId = id ?? null;
  });

  app.addHook('onSend', async (req, reply) => {
    if (isApiRoute(req) || inApi(req.url)) reply.header('cache-control', 'no-store');
  });
  app.addHook('onResponse', async (req, reply) => {
    if (!isApiRoute(req) && !inApi(req.url)) return;
    metrics.requests.observe(
      { route: req.routeOptions.url ?? 'unknown', status: `${Math.floor(reply.statusCode / 100)}xx` },
      reply.elapsedTime / 1000,
    );
  });

  app.setErrorHandler((err: FastifyError | ApiError | UpstreamError, req, reply) => {
    let e: ApiError;
    if (err instanceof ApiError) e = err;
    else if (err instanceof UpstreamError) {
      logger.warn({ err }, 'upstream failure');
      e = errors.unavailable();
    } else if (isRedisFailure(err)) {
      logger.warn({ err, url: req.url }, 'Redis failure');
      e = errors.unavailable();
    } else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      // an upload's limit is the attachment limit; other routes have their own
      const limit = req.routeOptions.bodyLimit ?? ctx.attachmentLimit;
      e = limit === ctx.attachmentLimit ? errors.tooLarge(limit) : errors.bodyTooLarge(limit);
    } else if (err.statusCode && err.statusCode < 500)
      e = new ApiError(err.statusCode, 'bad_request', err.message);
    else {
      logger.error({ err, url: req.url }, 'request failed');
      e = new ApiError(500, 'internal', 'Something went wrong on the server; try again');
    }
    if (typeof e.extra.retryAfter === 'number') void reply.header('retry-after', String(e.extra.retryAfter));
    return reply.code(e.status).send({ error: e.code, message: e.message, ...e.extra });
  });

  registerAuthRoutes(app, ctx);
  registerMailRoutes(app, ctx);
  registerFolderRoutes(app, ctx);
  registerComposeRoutes(app, ctx);
  registerEventRoutes(app, ctx);
  registerAccountRoutes(app, ctx);
  registerAdminRoutes(app, ctx);
  registerAdminMailRoutes(app, ctx);
  registerAdminDnsRoutes(app, ctx);
  registerAutoconfigRoutes(app, ctx);
  registerMtaStsRoutes(app, ctx);

  const assets = config.webmail_assets_dir ?? defaultAssetsDir();
  if (existsSync(join(assets, 'index.html'))) {
    void app.register(fastifyStatic, {
      root: assets,
      index: ['index.html'],
      wildcard: false,
      setHeaders: (res, path) => {
        // file names under assets/ carry a content hash
        void res.header(
          'cache-control',
          path.includes(`${join(assets, 'assets')}/`) ? 'public, max-age=31536000, immutable' : 'no-cache',
        );
      },
    });
  } else {
    logger.warn({ assets }, 'front end not built (pnpm build): only the API is served');
  }
  app.setNotFoundHandler((req, reply) => {
    if (inApi(req.url) || req.method !== 'GET' || !existsSync(join(assets, 'index.html')))
      return reply.code(404).send({ error: 'not_found', message: errors.notFound().message });
    // the single page answers every other path (deep links such as /folder/Archive)
    return reply.header('cache-control', 'no-cache').sendFile('index.html');
  });

  let port = 0;
  return {
    app,
    get port() {
      return port;
    },
    listening: () => ({
      https: port,
      ...(challenges?.listening ? { http: (challenges.address() as AddressInfo).port } : {}),
    }),
    imapConnections: (account) => pool.size(account),
    watching: (account) => notifier.watching(account),
    async start() {
      await app.listen({ port: config.webmail_port, host: config.listen_address });
      followCertificate(tls, app.server);
      const addr = app.server.address();
      port = typeof addr === 'object' && addr ? addr.port : config.webmail_port;
      if (challenges)
        await new Promise<void>((resolve, reject) => {
          challenges.once('error', reject);
          challenges.listen(config.webmail_http_port, config.listen_address, () => {
            challenges.removeListener('error', reject);
            resolve();
          });
        });
      issuer?.start();
      // the service's one ready line at info says the ports (runtime's runMain)
      logger.debug(
        {
          port,
          ...(challenges ? { httpPort: (challenges.address() as AddressInfo).port } : {}),
          imap: config.imap_server[0],
          submission: config.submission_server[0],
        },
        'webmail listening',
      );
    },
    async stop() {
      challenges?.close();
      await issuer?.stop();
      tls.close();
      notifier.closeAll();
      const closing = app.close();
      const timer = setTimeout(() => app.server.closeAllConnections(), drainTime(config.shutdown_grace));
      await closing;
      clearTimeout(timer);
      await notifier.stop();
      await pool.close();
    },
  };
}
