import { BlockList, isIP } from 'node:net';
import { z } from 'zod';
import { DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS } from '@mailyard/bus';
import {
  bool,
  commonSchema,
  ConfigError,
  duration,
  durationList,
  isHostName,
  nonNegativeInt,
  parseHostPort,
  port,
  positiveInt,
  queueLifetimeSchema,
  sendingAddressSchema,
  stringList,
  timerDuration,
} from '@mailyard/config';
import { MailMessages } from '@mailyard/contracts';
import { MX_SESSION_LIMIT, RECIPIENT_LIMIT } from './deliver.js';
import { DATA_DONE_TIMEOUT_MS, DATA_XFER_TIMEOUT_MS } from './smtp-client.js';

// 0.0.0.0 and ::, however written (::0, ::ffff:0.0.0.0, ...)
const UNSPECIFIED = new BlockList();
UNSPECIFIED.addAddress('0.0.0.0', 'ipv4');
UNSPECIFIED.addAddress('::', 'ipv6');
const unspecified = (a: string) => isIP(a) !== 0 && UNSPECIFIED.check(a, isIP(a) === 6 ? 'ipv6' : 'ipv4');

const splitAddresses = (v: unknown) => (typeof v === 'string' ? v.split(/[\s,]+/).filter(Boolean) : v);
/** A list of IP addresses (and, where `all` is allowed, that word). */
const addressList = (def: string[], allowAll: boolean) =>
  z
    .preprocess(
      splitAddresses,
      z.array(
        z
          .string()
          .refine((a) => isIP(a) !== 0 || (allowAll && a.toLowerCase() === 'all'), {
            message: allowAll ? 'expected "all" or IP addresses' : 'expected IP addresses',
          })
          // a listen-everywhere address names no address of ours: loop detection would be off
          .refine((a) => !unspecified(a), {
            message: allowAll
              ? 'names no address: use "all" for every address of this host'
              : 'names no address',
          }),
      ),
    )
    .default(def);

export interface Relayhost {
  host: string;
  port: number;
  /** Look up the host's MX (`host`, `host:port`), or connect to it (`[host]`, `[host]:port`). */
  mx: boolean;
}

const RELAYHOST_EXPECTED = 'expected host, host:port or [host]:port';

/** RELAYHOST's parts, or null when it is none of its forms. */
function relayhostParts(text: string, defaultPort: number): Relayhost | null {
  const hp = parseHostPort(text, defaultPort);
  if (!hp || (isIP(hp.host) === 0 && !isHostName(hp.host))) return null;
  return { host: hp.host.toLowerCase(), port: hp.port, mx: !text.startsWith('[') };
}

/** The relayhost setting in Postfix syntax: `[host]:port` (no MX lookup), `host:port`, `host`; null when empty. */
export function parseRelayhost(text: string, defaultPort: number): Relayhost | null {
  const t = text.trim();
  if (!t) return null;
  const parts = relayhostParts(t, defaultPort);
  if (!parts) throw new ConfigError([`RELAYHOST: ${RELAYHOST_EXPECTED}, got "${text}"`]);
  return parts;
}

export const outboundRelaySchema = z.object({
  ...commonSchema,
  /** Port of the destination MTAs (25; tests and networks where 25 is filtered use another). */
  outbound_port: port(25),
  /**
   * Send everything through this smarthost (Postfix: relayhost). `[host]:port` skips the
   * MX lookup, `host` or `host:port` looks up its MX. Empty: deliver to each domain's MX.
   */
  relayhost: z
    .string()
    .refine((v) => !v.trim() || relayhostParts(v.trim(), 25) !== null, { message: RELAYHOST_EXPECTED })
    .default(''),
  /** SASL credentials for the relayhost (AUTH PLAIN or LOGIN; only ever sent over TLS). */
  relayhost_username: z.string().default(''),
  relayhost_password: z.string().default(''),
  /** PEM file of extra CAs trusted when verifying certificates (MTA-STS, relayhost). */
  smtp_tls_ca_file: z.string().optional(),
  /** Per-recipient-domain simultaneous connections, shared by all instances (Postfix: default_destination_concurrency_limit). */
  default_destination_concurrency_limit: positiveInt(20),
  /** Messages per minute per recipient domain, shared by all instances; 0 = unlimited. */
  default_destination_rate_limit: nonNegativeInt(0),
  /** A message waiting this long for a free slot of its destination goes back to the first delay queue. */
  destination_slot_wait: timerDuration('30s'),
  /**
   * Destination domains with a `domain` label of their own in
   * mailyard_outbound_relay_attempts_total (those with the most attempts); the others are
   * counted as `other`, so the metric's series stay bounded.
   */
  metrics_top_domains: positiveInt(20),
  /** Messages delivered at once by one instance (AMQP prefetch). */
  outbound_prefetch: positiveInt(32),
  /**
   * Delays between attempts; after the last one, its value repeats. Each delay is a delay
   * queue `outbound.retry.<d>` (declared at start).
   */
  outbound_retry_schedule: durationList(DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS),
  ...queueLifetimeSchema,
  /**
   * How long the records of which recipients a message reached, bounced or warned are
   * kept (at least MAXIMAL_QUEUE_LIFETIME and a day): a message that keeps failing here
   * waits in the dead-letter queue until an operator moves it back, days later maybe, and
   * a record gone by then would send it again to those who have it. Delivery's
   * DELIVERY_DEDUPE_TTL, for the relay.
   */
  outbound_dedupe_ttl: duration('14d'),
  /** Connect timeout per address (Postfix: smtp_connect_timeout). */
  smtp_connect_timeout: timerDuration('30s'),
  /** Timeout for each reply of the remote server (Postfix: smtp_*_timeout, simplified). */
  smtp_reply_timeout: timerDuration('300s'),
  /** While the message is sent, how long the server may take none of it (Postfix: smtp_data_xfer_timeout). */
  smtp_data_xfer_timeout: duration(`${DATA_XFER_TIMEOUT_MS / 1000}s`),
  /**
   * The reply after the whole message, from its last byte (Postfix: smtp_data_done_timeout;
   * RFC 5321 §4.5.3.2.6: 10 minutes, as giving up early makes the message go out again).
   */
  smtp_data_done_timeout: duration(`${DATA_DONE_TIMEOUT_MS / 1000}s`),
  /**
   * Recipients per transaction at most; the rest of a destination's recipients follow in
   * further transactions on the same session (Postfix: smtp_destination_recipient_limit).
   */
  smtp_destination_recipient_limit: positiveInt(RECIPIENT_LIMIT),
  /**
   * Keep an SMTP session open after a message, for the next one to the same server
   * (Postfix: smtp_connection_cache_on_demand, here for every destination).
   */
  smtp_connection_cache_on_demand: bool(true),
  /** An unused cached session is closed after this long (Postfix: smtp_connection_cache_time_limit). */
  smtp_connection_cache_time_limit: timerDuration('2s'),
  /** A session is not reused once it is this old (Postfix: smtp_connection_reuse_time_limit). */
  smtp_connection_reuse_time_limit: timerDuration('300s'),
  /** A session carries at most this many messages; 0: no limit (Postfix: smtp_connection_reuse_count_limit). */
  smtp_connection_reuse_count_limit: nonNegativeInt(0),
  /** Address families to deliver over (Postfix: inet_protocols). */
  inet_protocols: z.enum(['all', 'ipv4', 'ipv6']).default('all'),
  /** Which family is tried first when an MX host has both (Postfix: smtp_address_preference). */
  smtp_address_preference: z.enum(['any', 'ipv4', 'ipv6']).default('any'),
  /** At most this many addresses are tried per delivery (Postfix: smtp_mx_address_limit). */
  smtp_mx_address_limit: positiveInt(5),
  /**
   * At most this many sessions per delivery, 0 for no limit (Postfix: smtp_mx_session_limit):
   * recipients a server defers go on to the next address until the session that reaches
   * this limit, or the last address, which defers them.
   */
  smtp_mx_session_limit: nonNegativeInt(MX_SESSION_LIMIT),
  /** Use STARTTLS when offered (Postfix: smtp_tls_security_level=may). */
  smtp_tls_opportunistic: bool(true),
  /** Domains whose MTA-STS policy is never fetched (e.g. internal domains). */
  mta_sts_ignore_domains: stringList([]),
  /** Failed processing attempts (broker/Redis trouble, not SMTP errors) before a message is dead-lettered (catalogue default). */
  outbound_max_attempts: positiveInt(MailMessages.outbound.failure.maxAttempts),
  /**
   * The addresses this mail system receives mail on (mta-inbound's), for mail loop
   * detection: an MX host at one of them is ourselves (Postfix: inet_interfaces). `all`:
   * every address of this host's network interfaces.
   */
  inet_interfaces: addressList(['all'], true),
  /**
   * Addresses that receive mail for us through a proxy or NAT (a public address in front
   * of the containers), also ourselves for loop detection (Postfix: proxy_interfaces).
   */
  proxy_interfaces: addressList([], false),
  /** Local source addresses for outbound connections (Postfix: smtp_bind_address, smtp_bind_address6). */
  ...sendingAddressSchema,
});
export type OutboundRelayConfig = z.infer<typeof outboundRelaySchema>;
