import { z } from 'zod';
import {
  bool,
  checkTlsFiles,
  cidrList,
  clientEndpointsSchema,
  commonSchema,
  duration,
  hostPortList,
  messageSizeSchema,
  nonNegativeInt,
  optionalPort,
  port,
  positiveDuration,
  positiveInt,
  sendingAddressSchema,
  serviceLoginSchema,
  stringList,
  timerDuration,
  tlsFilesSchema,
  url,
} from '@mailyard/config';

/** One host:port, the port written out (there is no default worth guessing). */
const server = (def: string) =>
  hostPortList([def]).refine((v) => v.length === 1 && /(^\[.*\]|[^:]):\d+$/.test(v[0]!), {
    message: 'expected one host:port, e.g. 127.0.0.1:993',
  });

const webmailKeys = z.object({
  ...commonSchema,
  /** HTTPS port of the web client (pages, JSON API, event stream). */
  webmail_port: port(443),
  /** The platform's certificate. */
  ...tlsFilesSchema,
  /**
   * Plain HTTP port (80 in docker-compose.yml): answers the ACME CA's HTTP-01 challenges
   * and redirects everything else to HTTPS on MYHOSTNAME; unset: not opened.
   */
  webmail_http_port: optionalPort(),
  /**
   * Names of the certificate obtained from the ACME CA and renewed automatically (the
   * first is its subject; usually MYHOSTNAME and the webmail's name); with ACME_ENABLED
   * and none given, MYHOSTNAME. Written to TLS_CERT_FILE/TLS_KEY_FILE, where every
   * service reads it.
   */
  acme_domains: stringList([]),
  /** The CA's ACME directory (default Let's Encrypt; its staging directory while trying things out). */
  acme_directory_url: url(['https'], 'https://acme-v02.api.letsencrypt.org/directory'),
  /** Contact address given to the CA (expiry warnings). */
  acme_email: z.string().optional(),
  /** http-01 (the CA fetches a token from WEBMAIL_HTTP_PORT, reached as port 80) or dns-01 (ACME_DNS_HOOK). */
  acme_challenge: z.enum(['http-01', 'dns-01']).default('http-01'),
  /** dns-01: executable run as `HOOK add|remove _acme-challenge.<name> <value>`; returns once the TXT record is published. */
  acme_dns_hook: z.string().optional(),
  /** Renew when the certificate has less than this left (Let's Encrypt's last 90 days: 30d). */
  acme_renew_before: duration('30d'),
  /** How often the certificate's remaining time is checked. */
  acme_check_interval: positiveDuration('12h'),
  /** CA certificate (PEM) that signs the ACME directory's HTTPS, for a private ACME CA. */
  acme_ca_file: z.string().optional(),
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
  imap_idle_timeout: timerDuration('5m'),
  /**
   * The longest one request's IMAP work may take before it is answered 503 and its
   * connection closed: a store that stopped answering does not hold the page.
   */
  imap_timeout: positiveDuration('30s'),
  /**
   * The longest sending a message (POST /api/send) may take, every step included (the
   * attachments, the submission, the copy in Sent); past it the user gets 503 and may send
   * again. Above the msa's POLICY_DATA_TIMEOUT (60s) and the broker's confirm (15s), so that
   * a message the msa would still accept is not cut short, and below the minutes a person
   * would wait on a page that says nothing.
   */
  send_timeout: positiveDuration('90s'),
  /**
   * The longest a client may take over a request's headers, and over its TLS handshake
   * before them (nginx: client_header_timeout); then the connection is closed.
   */
  client_header_timeout: positiveDuration('60s'),
  /**
   * The longest a request's body may pause between two reads (nginx: client_body_timeout):
   * a large attachment on a slow line that still moves is not cut short.
   */
  client_body_timeout: positiveDuration('60s'),
  /** An idle keep-alive connection is closed after this long (nginx: keepalive_timeout). */
  keepalive_timeout: positiveDuration('75s'),
  /**
   * Connections at once from one client address, IPv6 by its /64 (nginx: limit_conn); past
   * it, 503. Behind TRUSTED_PROXIES, the requests at once of the address they forward. A
   * browser opens about six, and every tab holds one for new mail; a small organisation's
   * whole office often comes from one NAT address, hence room for a hundred people or
   * more; 0: no limit.
   */
  client_connection_limit: nonNegativeInt(1000),
  /** Connections at once in all; past it a new one is closed at once; 0: no limit. */
  connection_limit: nonNegativeInt(10000),
  /** A session ends after this long without a request. */
  session_idle_timeout: duration('30m'),
  /** A session ends this long after login, however active. */
  session_absolute_timeout: duration('12h'),
  /**
   * After a new password (or two-factor turned on) the session goes on under a new cookie;
   * the old one still serves the same client address this long, for the requests its tabs
   * sent before they had the new one. Other addresses and the account's other sessions are
   * refused at once. 0: no grace.
   */
  session_renewal_grace: duration('10s'),
  /** Login attempts per client address per minute (besides the shared lockout, which counts failures). */
  login_rate_limit: positiveInt(10),
  /** Largest message sent, the msa's own limit. */
  ...messageSizeSchema,
  /** Reverse proxies whose X-Forwarded-For names the client (for the lockout and rate limit); empty: none. */
  trusted_proxies: cidrList([]),
  /**
   * Delay queues of this OUTBOUND_RETRY_SCHEDULE are looked in by the console's queue page
   * besides those the relays and delivery record themselves; not needed.
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
export const webmailSchema = webmailKeys.superRefine((c, ctx) => {
  checkTlsFiles(c, ctx);
  const problem = (key: string, message: string) => ctx.addIssue({ code: 'custom', path: [key], message });
  // reading and sending act for the user through this login: without it no page works
  if (!c.service_login_password && !c.service_login_password_file)
    problem(
      'service_login_password',
      'the webmail needs the service login secret that retrieval and msa accept (or SERVICE_LOGIN_PASSWORD_FILE)',
    );
  if (c.acme_enabled && c.acme_challenge === 'dns-01' && !c.acme_dns_hook)
    problem('acme_dns_hook', 'the dns-01 challenge needs a hook that publishes the TXT record');
});
export type WebmailConfig = z.infer<typeof webmailSchema>;
