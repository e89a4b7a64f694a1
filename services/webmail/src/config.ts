import { z } from 'zod';
import {
  bool,
  cidrList,
  clientEndpointsSchema,
  commonSchema,
  duration,
  hostPortList,
  messageSizeSchema,
  port,
  positiveInt,
  sendingAddressSchema,
  serviceLoginSchema,
  stringList,
  tlsFilesSchema,
} from '@mailyard/config';

/** One host:port, the port written out (there is no default worth guessing). */
const server = (def: string) =>
  hostPortList([def]).refine((v) => v.length === 1 && /(^\[.*\]|[^:]):\d+$/.test(v[0]!), {
    message: 'expected one host:port, e.g. 127.0.0.1:993',
  });

export const webmailSchema = z.object({
  ...commonSchema,
  /** HTTPS port of the web client (pages, JSON API, event stream). */
  webmail_port: port(443),
  /** The platform's certificate. */
  ...tlsFilesSchema,
  /** The retrieval service's IMAP over implicit TLS (its IMAPS_PORT). */
  imap_server: server('127.0.0.1:993'),
  /** The msa's submission over implicit TLS (its SUBMISSIONS_PORT). */
  submission_server: server('127.0.0.1:465'),
  /**
   * Verify the certificates of IMAP and submission (the name below). Off only where each
   * service makes its own self-signed certificate (`pnpm start` without TLS_CERT_FILE):
   * the service login's secret crosses these connections.
   */
  upstream_tls_verify: bool(true),
  /** Name the IMAP and submission certificates are checked against (default: MYHOSTNAME). */
  upstream_tls_servername: z.string().optional(),
  /** Extra CA certificate (PEM file) for IMAP and submission, e.g. a private CA. */
  upstream_tls_ca_file: z.string().optional(),
  /** The webmail's own login to IMAP and submission, acting for each user (see retrieval and msa). */
  ...serviceLoginSchema,
  /** IMAP connections one account may have open from this instance (requests queue beyond it). */
  imap_connections_per_user: positiveInt(3),
  /** An unused IMAP connection is logged out after this long. */
  imap_idle_timeout: duration('5m'),
  /** A session ends after this long without a request. */
  session_idle_timeout: duration('30m'),
  /** A session ends this long after login, however active. */
  session_absolute_timeout: duration('12h'),
  /** Login attempts per client address per minute (besides the shared lockout, which counts failures). */
  login_rate_limit: positiveInt(10),
  /** Largest message sent, the msa's own limit. */
  ...messageSizeSchema,
  /** Reverse proxies whose X-Forwarded-For names the client (for the lockout and rate limit); empty: none. */
  trusted_proxies: cidrList([]),
  /**
   * The relays' OUTBOUND_RETRY_SCHEDULE when it is not the default: which delay queues the
   * admin console's queue page looks in (as `mailyard queue` does).
   */
  outbound_retry_schedule: stringList([]),
  /** Where mail clients connect: the autoconfig and autodiscover answers, and the SRV records the admin console checks. */
  ...clientEndpointsSchema,
  /**
   * The MTA-STS policy served for each local domain on mta-sts.<domain> (RFC 8461):
   * testing (senders report failures but deliver) until the certificate is one every
   * sender trusts, then enforce. Publish a new id in `_mta-sts.<domain>` after a change.
   */
  mta_sts_mode: z.enum(['testing', 'enforce', 'none']).default('testing'),
  /** The addresses mail leaves from, for the admin console's forward and reverse DNS check. */
  ...sendingAddressSchema,
  /** Directory with the built front end (index.html, assets/); default: dist/public beside the service. */
  webmail_assets_dir: z.string().optional(),
});
export type WebmailConfig = z.infer<typeof webmailSchema>;
