import { z } from 'zod';
import {
  addressingSchema,
  bool,
  cidrList,
  commonSchema,
  duration,
  optionalCidrList,
  port,
  stringList,
} from '@mailyard/config';
import { intakeSchema } from '@mailyard/smtp-intake';

export const mtaInboundSchema = z.object({
  ...commonSchema,
  /** Port 25 listener (STARTTLS). */
  smtp_port: port(25),
  /** The SMTP settings both intakes share: limits, deadlines, TLS files, the policy service. */
  ...intakeSchema,
  /** Clients that may relay without authentication (Postfix: mynetworks). Loopback only by default. */
  mynetworks: cidrList(['127.0.0.0/8', '::1/128']),
  /** Remote domains we relay to from anyone (backup MX for them; Postfix: relay_domains). */
  relay_domains: stringList([]),
  /** Clients the per-client connection limits do not apply to; unset: mynetworks (Postfix: smtpd_client_event_limit_exceptions). */
  smtpd_client_event_limit_exceptions: optionalCidrList(),
  /** Look up the client's reverse DNS name (Postfix: smtpd_peername_lookup). */
  smtpd_peername_lookup: bool(true),
  /** Wait before the greeting; clients that talk early are disconnected. 0 disables (Postfix: postscreen_greet_wait). */
  postscreen_greet_wait: duration('0s'),
  ...addressingSchema,
  /**
   * How long recipient lookups are kept in process (0: not at all). Changes made with
   * `mailyard` reach every instance at once; the TTL bounds staleness otherwise.
   */
  directory_cache_ttl: duration('60s'),
});
export type MtaInboundConfig = z.infer<typeof mtaInboundSchema>;
