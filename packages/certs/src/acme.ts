import { execFile } from 'node:child_process';
import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Agent } from 'node:https';
import * as acme from 'acme-client';
import type { Redis } from 'ioredis';
import { limitServerConnections, type RefusedLimit } from '@mailyard/auth';
import { ConfigError } from '@mailyard/config';
import type { CertLogger } from './tls-source.js';

// Redis keys of the issuer (shared by every instance that runs it).
/** The ACME account's private key (PEM): one account for the platform. */
const ACCOUNT_KEY = 'acme:account-key';
/** Held by the instance that is ordering a certificate, so two never order at once. */
const LOCK_KEY = 'acme:lock';
/** `acme:http-01:<token>` → key authorization, while the CA validates the order. */
const HTTP01_PREFIX = 'acme:http-01:';

/** Longest an order may hold the lock (a stuck one frees it for another instance). */
const LOCK_MS = 10 * 60_000;
/** A failed order is tried again after this long, or the check interval if shorter. */
const RETRY_MS = 15 * 60_000;
/** Longest the CA may take to answer one request. */
const REQUEST_TIMEOUT_MS = 30_000;
/** Longest a DNS-01 hook may run. */
const DNS_HOOK_TIMEOUT_MS = 5 * 60_000;
/** RFC 8555 §8.3: the token is base64url. */
const TOKEN_RE = /^[A-Za-z0-9_-]{1,256}$/;

export interface AcmeOptions {
  /** The CA's ACME directory (Let's Encrypt's production or staging, a private CA's). */
  directoryUrl: string;
  /** Contact for the account (expiry notices from the CA). */
  email?: string | undefined;
  /** Names on the certificate: the first is its subject; all are validated. */
  domains: string[];
  challenge: 'http-01' | 'dns-01';
  /** DNS-01: an executable called `HOOK add|remove <name> <value>` that publishes or removes the TXT record. */
  dnsHook?: string | undefined;
  /** Where the certificate (full chain) and key are written; every TLS listener reads them. */
  certFile: string;
  keyFile: string;
  /** Renew when the certificate has less than this left, in ms. */
  renewBefore: number;
  /** How often the certificate is checked, in ms. */
  checkInterval: number;
  /** PEM of a CA that signs the ACME directory's HTTPS certificate (a private ACME CA). */
  caFile?: string | undefined;
  /** Longest the CA may take to answer one request (default 30 s). */
  requestTimeoutMs?: number;
}

export interface AcmeIssuer {
  /** Checks now, then every `checkInterval`; renews when due. */
  start(): void;
  stop(): Promise<void>;
  /** One check: `valid` (nothing to do), `issued` (a new certificate written), `busy` (another instance is ordering). */
  check(): Promise<'valid' | 'issued' | 'busy'>;
}

/**
 * Obtains and renews the platform's certificate from an ACME CA (RFC 8555) and writes it
 * where every TLS listener reads it (they reload it by themselves). Any number of
 * instances may run it: a Redis lock lets one order at a time, and HTTP-01 answers live in
 * Redis so whichever instance port 80 reaches can give them.
 */
export function createAcmeIssuer(opts: AcmeOptions, deps: { redis: Redis; logger: CertLogger }): AcmeIssuer {
  const { redis, logger } = deps;
  if (opts.challenge === 'dns-01' && !opts.dnsHook)
    throw new ConfigError(['ACME_DNS_HOOK: the dns-01 challenge needs a hook that publishes the TXT record']);
  // acme-client's axios waits for an answer for ever by default: a CA (or a proxy before
  // it) that accepts and never answers would hold the check, and no later check would run
  const requestTimeoutMs = opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
  acme.axios.defaults.timeout = requestTimeoutMs;
  if (opts.caFile) {
    // acme-client's own axios instance: only its requests trust this CA
    acme.axios.defaults.httpsAgent = new Agent({ ca: readFileSync(opts.caFile) });
  }
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<unknown> | null = null;
  let stopped = false;

  const due = (): boolean => {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(readFileSync(opts.certFile));
    } catch {
      return true;
    }
    // a key that is not the certificate's (a write that stopped between the two files)
    // would keep every listener on its old pair, or none starting at all
    try {
      if (!cert.checkPrivateKey(createPrivateKey(readFileSync(opts.keyFile)))) return true;
    } catch {
      return true;
    }
    const left = Date.parse(cert.validTo) - Date.now();
    const names = (cert.subjectAltName ?? '').split(', ').map((n) => n.replace(/^DNS:/, '').toLowerCase());
    return left < opts.renewBefore || !opts.domains.every((d) => names.includes(d.toLowerCase()));
  };

  const accountKey = async (): Promise<string> => {
    const created = (await acme.crypto.createPrivateKey()).toString();
    await redis.set(ACCOUNT_KEY, created, 'NX');
    return (await redis.get(ACCOUNT_KEY)) ?? created;
  };

  const hook = (action: 'add' | 'remove', name: string, value: string) =>
    new Promise<void>((resolve, reject) =>
      execFile(opts.dnsHook!, [action, name, value], { timeout: DNS_HOOK_TIMEOUT_MS }, (err, _out, stderr) =>
        err
          ? reject(new Error(`ACME_DNS_HOOK ${action} ${name} failed: ${stderr.trim() || err.message}`))
          : resolve(),
      ),
    );

  const order = async () => {
    const client = new acme.Client({ directoryUrl: opts.directoryUrl, accountKey: await accountKey() });
    const [key, csr] = await acme.crypto.createCsr({ commonName: opts.domains[0]!, altNames: opts.domains });
    const cert = await client.auto({
      csr,
      ...(opts.email ? { email: opts.email } : {}),
      termsOfServiceAgreed: true,
      challengePriority: [opts.challenge],
      // acme-client's self-check fetches the token through this host's resolver and
      // public address, which from inside a container often loops back nowhere (no
      // hairpin NAT); the CA's own validation is the one that counts
      skipChallengeVerification: true,
      challengeCreateFn: async (authz, challenge, keyAuthorization) => {
        if (challenge.type === 'http-01')
          await redis.set(HTTP01_PREFIX + challenge.token, keyAuthorization, 'PX', LOCK_MS);
        else await hook('add', `_acme-challenge.${authz.identifier.value}`, keyAuthorization);
      },
      challengeRemoveFn: async (authz, challenge, keyAuthorization) => {
        if (challenge.type === 'http-01') await redis.del(HTTP01_PREFIX + challenge.token);
        else await hook('remove', `_acme-challenge.${authz.identifier.value}`, keyAuthorization);
      },
    });
    writePair(opts, key, cert);
    const x = new X509Certificate(cert);
    logger.info(
      { domains: opts.domains, serial: x.serialNumber, notAfter: x.validTo },
      'certificate obtained from the ACME CA',
    );
  };

  const check = async (): Promise<'valid' | 'issued' | 'busy'> => {
    if (!due()) return 'valid';
    const id = randomBytes(8).toString('hex');
    if ((await redis.set(LOCK_KEY, id, 'PX', LOCK_MS, 'NX')) !== 'OK') return 'busy';
    try {
      // another instance may have renewed between our look and the lock
      if (!due()) return 'valid';
      await order().catch((err: unknown) => {
        // acme-client 5.4's response interceptor reads the response of a request that got
        // none (it timed out, or the connection failed after its retries) and throws this
        // TypeError instead of the request's own error
        if (err instanceof TypeError && /reading 'config'/.test(err.message))
          throw new Error(
            `no response from the ACME CA (no answer within ${requestTimeoutMs} ms, or the connection failed)`,
            { cause: err },
          );
        throw err;
      });
      return 'issued';
    } finally {
      await redis.eval(
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
        1,
        LOCK_KEY,
        id,
      );
    }
  };

  const loop = () => {
    running = check().then(
      () => schedule(opts.checkInterval),
      (err: unknown) => {
        logger.warn({ err, domains: opts.domains }, 'certificate order failed; trying again later');
        schedule(Math.min(opts.checkInterval, RETRY_MS));
      },
    );
  };
  const schedule = (ms: number) => {
    if (stopped) return;
    timer = setTimeout(loop, ms);
    timer.unref();
  };

  return {
    start: () => loop(),
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
    check,
  };
}

/**
 * Both files written under temporary names first, then renamed into place: a failure
 * while writing leaves the old pair as it was. Key first: a listener that reads between
 * the renames sees a mismatched pair, keeps the old one and loads the new pair at its
 * next check; a stop between them is found by due(), which orders again.
 */
function writePair(opts: Pick<AcmeOptions, 'certFile' | 'keyFile'>, key: Buffer | string, cert: string) {
  const files = [
    { file: opts.keyFile, data: key, mode: 0o600 },
    { file: opts.certFile, data: cert, mode: 0o644 },
  ].map((f) => ({ ...f, tmp: `${f.file}.${randomBytes(4).toString('hex')}.tmp` }));
  try {
    for (const f of files) writeFileSync(f.tmp, f.data, { mode: f.mode });
    for (const f of files) renameSync(f.tmp, f.file);
  } finally {
    for (const f of files) rmSync(f.tmp, { force: true });
  }
}

/**
 * Port 80's bounds. It serves tiny GETs only (the CA's validation, a browser's first
 * request before the redirect to HTTPS; HSTS sends it to HTTPS after that), so a request
 * has seconds to arrive, and no client needs many connections: a CA validates each name
 * of an order on a connection of its own, from several addresses.
 */
export interface HttpChallengeLimits {
  /** Longest a client takes over a request's headers, or before its first (then 408). */
  headerTimeoutMs: number;
  /** An idle keep-alive connection is closed after this long. */
  keepAliveTimeoutMs: number;
  /** Connections at once from one address, IPv6 by its /64; past it 503; 0: no limit. */
  perClient: number;
  /** Connections at once in all; past it a new one is closed; 0: no limit. */
  total: number;
}

export const HTTP_CHALLENGE_LIMITS: Readonly<HttpChallengeLimits> = {
  headerTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  perClient: 50,
  total: 1000,
};

const CHALLENGE_PATH_RE = /^\/\.well-known\/acme-challenge\/([^/]+)$/;

/**
 * Port 80: answers the CA's HTTP-01 requests (RFC 8555 §8.3) from Redis and sends every
 * other GET or HEAD to HTTPS on `hostname`. Only GET and HEAD without a body are taken
 * (405, 413), within the bounds of `limits`: the port faces the internet, and nothing it
 * serves takes longer or more than one small request.
 */
export function createHttpChallengeServer(opts: {
  redis: Redis;
  hostname: string;
  logger: CertLogger;
  limits?: Partial<HttpChallengeLimits>;
  /** Every connection refused, by the limit it was over (a metric). */
  onRefused?: (limit: RefusedLimit) => void;
}): Server {
  const limits = { ...HTTP_CHALLENGE_LIMITS, ...opts.limits };
  const answer = (
    res: ServerResponse,
    status: number,
    text: string,
    headers: Record<string, string> = {},
  ) => {
    res.writeHead(status, { 'content-type': 'text/plain', ...headers });
    res.end(text);
  };
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    if (connections.isOver(req.socket))
      return answer(res, 503, 'too many connections from your address at once; try again shortly\n', {
        connection: 'close',
        'retry-after': '10',
      });
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return answer(res, 405, 'only GET and HEAD here; use HTTPS\n', {
        allow: 'GET, HEAD',
        connection: 'close',
      });
    const { headers } = req;
    if (headers['transfer-encoding'] !== undefined || (headers['content-length'] ?? '0') !== '0')
      // not read: the connection ends with the answer
      return answer(res, 413, 'a request here has no body\n', { connection: 'close' });
    const path = requestPath(req.url ?? '/');
    if (path === null) return answer(res, 400, 'bad request target\n', { connection: 'close' });
    const m = CHALLENGE_PATH_RE.exec(path);
    if (m) {
      const token = m[1]!;
      const found = TOKEN_RE.test(token) ? await opts.redis.get(HTTP01_PREFIX + token) : null;
      return answer(res, found ? 200 : 404, found ?? 'no such challenge\n');
    }
    res.writeHead(301, { location: `https://${opts.hostname}${path.slice(0, 2048)}` });
    res.end();
  };
  const server = createServer(
    {
      headersTimeout: limits.headerTimeoutMs,
      // no request here has a body: the whole request is its headers
      requestTimeout: limits.headerTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // how often Node looks for requests past their deadline (default 30 s, which would
      // let a trickled request hold its socket three times as long)
      connectionsCheckingInterval: Math.min(30_000, Math.ceil(limits.headerTimeoutMs / 4)),
    },
    (req, res) => {
      handle(req, res).catch((err: unknown) => {
        opts.logger.warn({ err }, 'ACME challenge not answered');
        if (res.headersSent) return void res.destroy();
        answer(res, 503, 'try again\n');
      });
    },
  );
  server.maxHeadersCount = 50;
  const connections = limitServerConnections(server, {
    perClient: limits.perClient,
    total: limits.total,
    listener: 'HTTP',
    ...(opts.onRefused ? { onRefused: opts.onRefused } : {}),
    logger: opts.logger,
  });
  return server;
}

/** The path of a request target in origin form (`/x?y`) or absolute form (`http://host/x`); null for others. */
function requestPath(target: string): string | null {
  if (target.startsWith('/')) return target.split('?')[0]!;
  if (!/^https?:\/\//i.test(target)) return null;
  try {
    return new URL(target).pathname;
  } catch {
    return null;
  }
}
