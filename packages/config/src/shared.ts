import { isIP } from 'node:net';
import { z } from 'zod';
import {
  bool,
  bytes,
  bytesOrUnlimited,
  cidrList,
  duration,
  port,
  positiveDuration,
  stringList,
  timerDuration,
} from './fields.js';

// Settings that several services must agree on, each declared once. A service schema
// spreads the fragment it needs, so the key, its environment variable, its default
// and its validation cannot differ from one service to the next
// (test/shared-settings.test.ts refuses a key declared twice).

/**
 * Recipient addressing: every service that resolves recipients (mta-inbound, msa,
 * delivery) and the policy service, whose access tables and user lists follow it.
 */
export const addressingSchema = {
  /**
   * Plus-addressing separator (Postfix: recipient_delimiter): `alice+tag@` is delivered
   * to `alice@`, and alice may send as it. mta-inbound accepts by it and delivery files
   * by it: two values would accept mail that is then not delivered.
   */
  recipient_delimiter: z.string().min(1).max(1).default('+'),
};

/** The mail store: every service that reads or writes the mailboxes (delivery, retrieval). */
export const mailStoreSchema = {
  /** Root of the mailboxes: <root>/<domain>/<local-part>/ is an account's Maildir. */
  maildir_root: z.string().min(1).default('/var/mail/mailyard'),
};

/** The storage quota: delivery refuses by it, retrieval reports it and refuses APPEND by it. */
export const quotaSchema = {
  /** Storage quota per account (512M, 2G...) unless Redis holds an override (hash quota:storage); unset: unlimited. */
  quota_storage: bytesOrUnlimited(0),
};

/** The in-process cache of recipient lookups (mta-inbound, delivery). */
export const directoryCacheSchema = {
  /**
   * How long recipient lookups are kept in process (0: not at all). Changes made with
   * `mailyard` reach every instance at once; the TTL bounds staleness otherwise.
   */
  directory_cache_ttl: duration('60s'),
};

/**
 * How long mail may wait for its recipients (outbound-relay for the remote ones, delivery
 * for those it defers): as one Postfix queue manager serves both, one setting each, so a
 * sender is warned and a message given up on after the same time whoever holds it.
 */
export const queueLifetimeSchema = {
  /**
   * Give up on a deferred recipient this long after its message was accepted, and return
   * it to the sender (Postfix: maximal_queue_lifetime).
   */
  maximal_queue_lifetime: duration('5d'),
  /**
   * Tell the sender once when a recipient is still deferred this long after acceptance;
   * 0 disables (Postfix: delay_warning_time).
   */
  delay_warning_time: duration('4h'),
};

/**
 * Who may relay (mta-inbound enforces it, the policy service's permit_mynetworks and
 * reject_unauth_destination decide by it): two values would make a client trusted by
 * one and not the other.
 */
export const relaySchema = {
  /** Clients that may relay without authentication (Postfix: mynetworks). Loopback only by default. */
  mynetworks: cidrList(['127.0.0.0/8', '::1/128']),
  /** Remote domains we relay to from anyone (backup MX for them; Postfix: relay_domains). */
  relay_domains: stringList([]),
};

/**
 * The authserv-id of our Authentication-Results (RFC 8601 §2.5): the policy service writes
 * its results under it, and mta-inbound and msa remove any that arrive under it with a
 * message. Two values would let a forged result under the policy's id through an intake.
 */
export const authservSchema = {
  /** authserv-id of our Authentication-Results headers; unset: myhostname. */
  authserv_id: z.string().min(1).optional(),
};

/** The authserv-id in force: AUTHSERV_ID, else MYHOSTNAME. */
export function authservIdOf(config: { authserv_id?: string | undefined; myhostname: string }): string {
  return config.authserv_id ?? config.myhostname;
}

/** The certificate of every TLS listener (mta-inbound, msa, retrieval, webmail). */
export const tlsFilesSchema = {
  /** PEM certificate and key; when unset a self-signed pair is generated at start (clients will warn). */
  tls_cert_file: z.string().optional(),
  tls_key_file: z.string().optional(),
  /**
   * How often the two files are checked for a change (0: never). A changed pair (a
   * renewal) is served to new connections without a restart; open ones keep theirs.
   */
  tls_reload_interval: timerDuration('60s'),
  /**
   * The files are written by the webmail's ACME issuer (ACME_DOMAINS): until they exist
   * the listeners serve a self-signed certificate instead of refusing to start.
   */
  acme_enabled: bool(false),
};

type TlsFilesKeys = {
  tls_cert_file?: string | undefined;
  tls_key_file?: string | undefined;
  acme_enabled: boolean;
};

/**
 * What the keys of tlsFilesSchema must agree on, as [key, problem]: a certificate needs
 * its key, and ACME needs both files to write to.
 */
export function tlsFilesProblems(c: TlsFilesKeys): [keyof TlsFilesKeys, string][] {
  const missing = c.tls_cert_file ? 'tls_key_file' : 'tls_cert_file';
  if (c.acme_enabled && (!c.tls_cert_file || !c.tls_key_file))
    return [
      [
        missing,
        'with ACME_ENABLED, TLS_CERT_FILE and TLS_KEY_FILE name where the ACME certificate is written',
      ],
    ];
  if (!c.tls_cert_file !== !c.tls_key_file)
    return [[missing, 'both TLS_CERT_FILE and TLS_KEY_FILE must be set']];
  return [];
}

/**
 * The check of a schema that spreads tlsFilesSchema (`.superRefine(checkTlsFiles)`), so
 * that `--check-config` and the loader report these as they report a bad value.
 */
export function checkTlsFiles(c: TlsFilesKeys, ctx: z.RefinementCtx): void {
  for (const [key, message] of tlsFilesProblems(c)) ctx.addIssue({ code: 'custom', path: [key], message });
}

/**
 * The largest message: accepted by SMTP (mta-inbound, msa; Postfix: message_size_limit),
 * by IMAP APPEND (retrieval, announced as APPENDLIMIT) and sent by the webmail (its
 * attachments may add up to about 73% of it, the rest is their base64 encoding). One
 * value, so a message one service takes is not refused by the next. Keep below the
 * broker's max_message_size.
 */
export const messageSizeSchema = {
  /** In bytes (25M, 50M...). */
  message_size_limit: bytes(25 * 1024 * 1024),
};

/** The services where a client logs in (msa, retrieval). */
export const loginSchema = {
  /**
   * Time from connect to a successful login, however active the client is (Dovecot:
   * CLIENT_LOGIN_TIMEOUT_MSECS, 3 minutes), so a client trickling bytes or repeating
   * NOOP cannot hold a session without logging in; then SMTP 421 4.7.0, IMAP BYE,
   * POP3 -ERR.
   */
  login_timeout: positiveDuration('3m'),
};

/**
 * The addresses mail leaves from (outbound-relay binds to them); the DNS checks (policy,
 * webmail, `mailyard dns check`) ask that MYHOSTNAME resolves to each and that each one's
 * PTR names MYHOSTNAME, since receivers judge us by exactly these.
 */
export const sendingAddressSchema = {
  /**
   * Local IPv4 source address for outbound connections (Postfix: smtp_bind_address); empty:
   * the system picks. An address, not a name: anything else would fail every delivery.
   */
  smtp_bind_address: z
    .string()
    .refine((v) => v === '' || isIP(v) === 4, 'expected an IPv4 address such as 192.0.2.25, or nothing')
    .default(''),
  /** The same for IPv6 (Postfix: smtp_bind_address6). */
  smtp_bind_address6: z
    .string()
    .refine((v) => v === '' || isIP(v) === 6, 'expected an IPv6 address such as 2001:db8::25, or nothing')
    .default(''),
};

/**
 * Where mail clients connect, as the autoconfig and autodiscover answers (webmail) and the
 * SRV records to publish (RFC 6186, RFC 8314) tell them: one value for both, so the DNS
 * check (policy, webmail, CLI) expects what the autoconfig answers.
 */
export const clientEndpointsSchema = {
  /** Host name clients connect to for IMAP, POP3 and submission (default: MYHOSTNAME). */
  client_hostname: z.string().optional(),
  /** IMAP with STARTTLS, as published (retrieval's IMAP_PORT behind any port mapping). */
  client_imap_port: port(143),
  /** IMAP over implicit TLS (RFC 8314), as published. */
  client_imaps_port: port(993),
  /** POP3 over implicit TLS, as published. */
  client_pop3s_port: port(995),
  /** Submission with STARTTLS, as published. */
  client_submission_port: port(587),
  /** Submission over implicit TLS (RFC 8314), as published. */
  client_submissions_port: port(465),
};
