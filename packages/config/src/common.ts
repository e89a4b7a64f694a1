import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { z } from 'zod';
import { dnsServerList, isHostName, nonNegativeInt, port, positiveDuration, url } from './fields.js';

/** Boot settings every service has: where the broker and Redis are, logging, metrics. */
export const commonSchema = {
  /** RabbitMQ connection URL. */
  amqp_url: url(['amqp', 'amqps'], 'amqp://guest:guest@127.0.0.1:5672'),
  /**
   * A file holding the broker password, put into AMQP_URL at load (so the URL in the
   * environment, which `docker inspect` and logs show, carries none). Compose: a secret.
   */
  amqp_password_file: z.string().min(1).optional(),
  /** Redis connection URL (directory, policy data, counters). */
  redis_url: url(['redis', 'rediss'], 'redis://127.0.0.1:6379'),
  /** A file holding the Redis password (`requirepass`), put into REDIS_URL at load. */
  redis_password_file: z.string().min(1).optional(),
  /** Prefix of every Redis key, so several installations (or tests) can share one Redis. */
  redis_prefix: z.string().default('mailyard:'),
  /**
   * A Redis command without an answer in this time fails (and with it the login, lookup
   * or decision that needed it: a temporary failure). Without it, a Redis that accepts
   * connections and never answers (hung, or a proxy in front of a dead one) would hold
   * every session that asks it, for ever; so it cannot be turned off (0 is refused).
   */
  redis_command_timeout: positiveDuration('5s'),
  /** Port of the /metrics, /healthz and /readyz endpoints (0 picks a free port). */
  http_port: port(0),
  /**
   * Address the service listens on: an IP address (0.0.0.0 all IPv4, :: all addresses) or
   * a name resolving to one of this machine's (checked at start and by --check-config).
   */
  listen_address: z
    .string()
    .refine(
      (v) => isIP(v) !== 0 || isHostName(v),
      'expected an IP address such as 0.0.0.0 or ::, or a host name',
    )
    .default('0.0.0.0'),
  // INFO and Debug mean what they say, as in most loggers' settings
  log_level: z
    .preprocess(
      (v) => (typeof v === 'string' ? v.toLowerCase() : v),
      z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    )
    .default('info'),
  /** Our host name: greeting, Received headers, Message-IDs, bounces (Postfix: myhostname). */
  myhostname: z
    .string()
    .refine(isHostName, 'expected a host name such as mail.example.org')
    .default(hostname()),
  /** DNS servers (IP address, optional :port) that every lookup uses instead of the system's resolvers. */
  dns_servers: dnsServerList([]),
  /**
   * DNS answers kept in process, each for its TTL (negative ones for the zone's negative
   * TTL); 0 keeps none. Every connection of a busy sender asks the same reverse name,
   * HELO name and sender domain again, and a round trip to even a local resolver costs
   * more than the check it answers.
   */
  dns_cache_size: nonNegativeInt(10_000),
  /**
   * From SIGTERM to exit, at most: clients and messages in flight get this much less the
   * last second (see drainTime), then are told goodbye (SMTP 421, IMAP BYE, POP3 -ERR) and
   * disconnected, and unfinished messages go back to their queue. Keep it below the stop
   * timeout of whatever stops the service (docker: stop_grace_period, 10s by default).
   * Above 0: with none, every stop would cut the sessions in flight.
   */
  shutdown_grace: positiveDuration('5s'),
};

/**
 * How long clients and consumers may finish at shutdown: the grace period less the time
 * kept for closing the broker and Redis connections (a second, or half a short grace).
 */
export function drainTime(graceMs: number): number {
  return graceMs - Math.min(1000, graceMs / 2);
}
