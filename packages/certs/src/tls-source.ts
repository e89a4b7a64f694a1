import { X509Certificate } from 'node:crypto';
import { statSync } from 'node:fs';
import { createSecureContext, type SecureContext, type Server as TlsServer } from 'node:tls';
import { ConfigError, readTlsPair, selfSignedCertificate, tlsFilesProblems } from '@mailyard/config';

export interface TlsPair {
  key: Buffer | string;
  cert: Buffer | string;
  /** Generated at start: no files configured, or the ACME issuer has not written them yet. */
  selfSigned: boolean;
}

/** What the source logs through (a pino logger fits). */
export interface CertLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/**
 * The certificate every TLS listener of a process serves, kept current: the files are
 * checked every `reloadInterval` and a changed pair (a renewal by the ACME issuer,
 * certbot, or an administrator copying new files) is taken for new connections, while
 * connections already open keep the one they started with. A pair that does not load
 * (a key that does not match its certificate, half of a copy) leaves the old one in force.
 */
export interface TlsSource {
  current(): TlsPair;
  /** The current pair as a secure context (for STARTTLS upgrades), rebuilt only on a change. */
  context(): SecureContext;
  /** Seconds until the current certificate's end (negative once past it). */
  expiresIn(now?: number): number;
  /** Called with the new pair after each reload; returns a function that removes the listener. */
  onChange(fn: (pair: TlsPair) => void): () => void;
  /** Stops watching the files. */
  close(): void;
}

export interface TlsSourceOptions {
  certFile?: string | undefined;
  keyFile?: string | undefined;
  /** Name on the self-signed certificate. */
  hostname: string;
  /** How often the files are checked, in ms (0: never). */
  reloadInterval: number;
  /**
   * The files are written by the ACME issuer: while they are missing, or do not load at
   * start, serve a self-signed certificate and take theirs as soon as a good pair is
   * written (otherwise such files are an error).
   */
  waitForFiles?: boolean;
  logger: CertLogger;
}

/** TLS versions every listener accepts. */
export const MIN_TLS_VERSION = 'TLSv1.2' as const;

type Signature = string;

const signatureOf = (files: string[]): Signature | null => {
  try {
    return files
      .map((f) => {
        const s = statSync(f);
        // ctime too: a chmod or chown that makes a refused file readable changes only it
        return `${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
      })
      .join('|');
  } catch {
    return null;
  }
};

const describe = (cert: Buffer | string) => {
  try {
    const x = new X509Certificate(cert);
    return { subject: x.subject.replace(/\n/g, ', '), serial: x.serialNumber, notAfter: x.validTo };
  } catch {
    return {};
  }
};

/** Reads and checks a pair (the key must match the certificate); throws naming the key. */
function readPair(certFile: string, keyFile: string): TlsPair {
  return { ...readTlsPair(certFile, keyFile), selfSigned: false };
}

export function createTlsSource(opts: TlsSourceOptions): TlsSource {
  const { certFile, keyFile, logger } = opts;
  if (!certFile && !keyFile)
    return staticSource({ ...selfSignedCertificate(opts.hostname), selfSigned: true });
  if (!certFile || !keyFile)
    throw new ConfigError([
      `${certFile ? 'TLS_KEY_FILE' : 'TLS_CERT_FILE'}: both TLS_CERT_FILE and TLS_KEY_FILE must be set`,
    ]);

  let seen = signatureOf([certFile, keyFile]);
  const first = (): TlsPair | null => {
    if (seen === null && opts.waitForFiles) return null;
    try {
      return readPair(certFile, keyFile);
    } catch (err) {
      if (!opts.waitForFiles) throw err;
      // the issuer orders such a pair again (a renewal that stopped between its two
      // files): the service it runs in must start to do it
      logger.warn({ err }, 'certificate files not loaded; a self-signed certificate is used until they are');
      seen = null;
      return null;
    }
  };
  let pair: TlsPair = first() ?? { ...selfSignedCertificate(opts.hostname), selfSigned: true };
  let ctx: SecureContext | null = null;
  const listeners = new Set<(p: TlsPair) => void>();
  // a change that did not load is retried at the next check, and reported when it is still
  // the same files then (a copy or a renewal caught between its two renames loads next time)
  let failedOnce: Signature | null = null;

  const check = () => {
    const sig = signatureOf([certFile, keyFile]);
    if (sig === null || sig === seen) return;
    let next: TlsPair;
    try {
      next = readPair(certFile, keyFile);
    } catch (err) {
      if (failedOnce === sig) {
        logger.warn({ err }, 'new certificate files not loaded; the previous certificate stays in use');
        seen = sig;
      }
      failedOnce = sig;
      return;
    }
    seen = sig;
    failedOnce = null;
    pair = next;
    ctx = null;
    logger.info(describe(next.cert), 'certificate reloaded');
    for (const fn of listeners) fn(next);
  };
  const timer = opts.reloadInterval > 0 ? setInterval(check, opts.reloadInterval) : null;
  timer?.unref();

  return {
    current: () => pair,
    context: () =>
      (ctx ??= createSecureContext({ key: pair.key, cert: pair.cert, minVersion: MIN_TLS_VERSION })),
    expiresIn: (now = Date.now()) => expiresIn(pair.cert, now),
    onChange(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    close() {
      if (timer) clearInterval(timer);
      listeners.clear();
    },
  };
}

function expiresIn(cert: Buffer | string, now: number): number {
  return (Date.parse(new X509Certificate(cert).validTo) - now) / 1000;
}

/** A pair that never changes (self-signed, or given by a test). */
export function staticSource(pair: TlsPair): TlsSource {
  let ctx: SecureContext | null = null;
  return {
    current: () => pair,
    context: () =>
      (ctx ??= createSecureContext({ key: pair.key, cert: pair.cert, minVersion: MIN_TLS_VERSION })),
    expiresIn: (now = Date.now()) => expiresIn(pair.cert, now),
    onChange: () => () => undefined,
    close: () => undefined,
  };
}

/**
 * Keeps a node TLS server (implicit TLS, HTTPS) on the source's certificate: new
 * connections get the new one, open ones are left alone. Returns the unsubscribe.
 */
export function followCertificate(source: TlsSource, server: TlsServer): () => void {
  return source.onChange((p) =>
    server.setSecureContext({ key: p.key, cert: p.cert, minVersion: MIN_TLS_VERSION }),
  );
}

/** The TLS keys every listening service shares (packages/config's tlsFilesSchema). */
export interface TlsFilesConfig {
  tls_cert_file?: string | undefined;
  tls_key_file?: string | undefined;
  tls_reload_interval: number;
  acme_enabled: boolean;
  myhostname: string;
}

/**
 * The service's certificate from its config: the files (reloaded on change), or a
 * self-signed pair, which is logged as a warning since clients will refuse or warn.
 */
export function tlsSourceFromConfig(config: TlsFilesConfig, logger: CertLogger, service: string): TlsSource {
  const problems = tlsFilesProblems(config);
  if (problems.length) throw new ConfigError(problems.map(([key, p]) => `${key.toUpperCase()}: ${p}`));
  const source = createTlsSource({
    certFile: config.tls_cert_file,
    keyFile: config.tls_key_file,
    hostname: config.myhostname,
    reloadInterval: config.tls_reload_interval,
    waitForFiles: config.acme_enabled,
    logger,
  });
  if (source.current().selfSigned)
    logger.warn(
      {},
      config.acme_enabled
        ? `${service} uses a self-signed certificate until the ACME certificate is written`
        : `no TLS_CERT_FILE/TLS_KEY_FILE configured: ${service} uses a self-signed certificate`,
    );
  return source;
}
