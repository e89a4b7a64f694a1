import { z } from 'zod';
import {
  bool,
  bytes,
  checkTlsFiles,
  cidrList,
  commonSchema,
  duration,
  loginSchema,
  mailStoreSchema,
  messageSizeSchema,
  nonNegativeInt,
  port,
  positiveDuration,
  positiveInt,
  quotaSchema,
  serviceLoginNetworksSchema,
  serviceLoginSchema,
  timerDuration,
  tlsFilesSchema,
} from '@mailyard/config';

const retrievalKeys = z.object({
  ...commonSchema,
  ...mailStoreSchema,
  /** IMAP with STARTTLS (RFC 9051). */
  imap_port: port(143),
  /** IMAP over implicit TLS (RFC 8314). */
  imaps_port: port(993),
  /** POP3 with STLS (RFC 1939, 2595). */
  pop3_port: port(110),
  /** POP3 over implicit TLS. */
  pop3s_port: port(995),
  ...tlsFilesSchema,
  /**
   * Clients allowed to log in before TLS on 143/110 (Dovecot: login_trusted_networks with
   * disable_plaintext_auth). Empty: LOGINDISABLED until STARTTLS for everyone.
   */
  plaintext_auth_networks: cidrList([]),
  /** Largest APPEND (and any literal) accepted; announced as APPENDLIMIT. */
  ...messageSizeSchema,
  /** Longest command line in bytes, literals excluded (Dovecot: imap_max_line_length). */
  imap_max_line_length: positiveInt(65536),
  /**
   * Largest literal before login, in bytes (8K, 16K...), and the most literal bytes one
   * command may carry then: LOGIN's user name and password, ID's strings; never more
   * than message_size_limit. A literal as large as a message would let a client that
   * never logs in hold megabytes on each of its connections (Dovecot's imap-login
   * refuses literals past its 4 KiB input buffer).
   */
  imap_max_literal_before_login: bytes(8192),
  /**
   * Bad commands (BAD, failed logins, internal errors) before the session is closed, IMAP
   * and POP3 alike: every one counts before login, a run of them in a row after it
   * (Dovecot: 10 in imap-login, then 20 in a row; both "Too many invalid IMAP commands").
   */
  imap_max_bad_commands: positiveInt(10),
  /**
   * Invalid commands before login (unknown, not allowed before it, malformed; failed logins
   * are not) before the session is closed, IMAP and POP3 alike, as Dovecot's imap-login
   * and pop3-login close it at the third: what a browser or another protocol's client is
   * made to send here (a cross-protocol attack such as ALPACA) is stopped after a few lines.
   */
  imap_max_bad_commands_before_login: positiveInt(3),
  /** Idle time before autologout; at least 30 minutes for IMAP per RFC 9051 §5.4. */
  imap_autologout: timerDuration('30m'),
  /**
   * How long an idling session collects changes to its folder before it looks at them and
   * tells the client (Dovecot waits 500 ms, NOTIFY_DELAY_MSECS): a burst of deliveries or
   * another client's moves is then one read of the folder and one answer, not one each.
   * 0: at once.
   */
  imap_idle_notify_delay: timerDuration('500ms'),
  /**
   * Idle time allowed before login, IMAP and POP3. The autologout timers of RFC 9051
   * §5.4 and RFC 1939 §3 are for logged-in sessions; before login a client has nothing
   * to wait for, and a minute is plenty for a user to answer a password prompt.
   */
  login_idle_timeout: positiveDuration('60s'),
  ...loginSchema,
  /** Offer COMPRESS=DEFLATE (RFC 4978): less traffic for mobile clients, some CPU per byte sent. */
  imap_compress: bool(true),
  /** POP3 idle time before the session is closed once logged in; at least 10 minutes per RFC 1939 §3. */
  pop3_autologout: timerDuration('10m'),
  /**
   * Sessions of one account at once, over all IPs and all instances, counted as
   * mail_max_ip_connections is (Dovecot: mail_max_userip_connections is per IP).
   */
  mail_max_user_connections: positiveInt(50),
  /**
   * Sessions from one client address (IPv6: one /64) at once, IMAP and POP3 together,
   * over all instances (Redis, a lease per session that ends within 30 s of the instance
   * holding it dying; while Redis fails, counted on each instance alone).
   */
  mail_max_ip_connections: positiveInt(100),
  /**
   * New IMAP and POP3 connections per minute from one client address, over all
   * instances (Redis); 0: no limit. 300, as for SMTP (mox's default): clients open a
   * few connections per folder at most.
   */
  mail_max_ip_connection_rate: nonNegativeInt(300),
  /**
   * Clients the two limits above do not apply to (Postfix: smtpd_client_event_limit_exceptions);
   * loopback by default, where a webmail on the same host opens its sessions from.
   */
  mail_ip_limit_exceptions: cidrList(['127.0.0.0/8', '::1/128']),
  /** Sessions this instance serves at once. */
  max_connections: positiveInt(5000),
  /**
   * Processes of this instance sharing its listening sockets (node:cluster), each with
   * its own event loop; 0: one per core. The connection limits above count the
   * instance's workers together (max_connections, and the others while Redis fails).
   */
  retrieval_workers: nonNegativeInt(0),
  ...quotaSchema,
  /**
   * How long a verified login is remembered so that the next one skips argon2id
   * (Dovecot: auth_cache_ttl); 0 disables. Every use re-reads the stored password and
   * app passwords, so a changed password, a deleted account or a revoked app password
   * is refused at once; the TTL only bounds how long a login stays recognised.
   */
  auth_cache_ttl: duration('60s'),
  /** Most remembered logins per process; the oldest go first (Dovecot: auth_cache_size). */
  auth_cache_size: positiveInt(10000),
  /** Announce our own changes (flags, expunges, appends) to other instances' IDLE sessions. */
  publish_changes: bool(true),
  /** The webmail's login acting for users (SASL PLAIN with an authzid): name, secret, networks. */
  ...serviceLoginSchema,
  ...serviceLoginNetworksSchema,
});
export const retrievalSchema = retrievalKeys.superRefine(checkTlsFiles);
export type RetrievalConfig = z.infer<typeof retrievalSchema>;
