import { z } from 'zod';
import {
  addressingSchema,
  bool,
  bytes,
  cidrList,
  commonSchema,
  duration,
  port,
  positiveInt,
  stringList,
} from '@mailyard/config';
import { policyClientSchema } from '@mailyard/policy-client';

export const mtaInboundSchema = z.object({
  ...commonSchema,
  /** Port 25 listener. */
  smtp_port: port(25),
  /** PEM certificate and key for STARTTLS; when unset a self-signed pair is generated at start. */
  tls_cert_file: z.string().optional(),
  tls_key_file: z.string().optional(),
  /** Clients that may relay without authentication (Postfix: mynetworks). Loopback only by default. */
  mynetworks: cidrList(['127.0.0.0/8', '::1/128']),
  /** Remote domains we relay to from anyone (backup MX for them; Postfix: relay_domains). */
  relay_domains: stringList([]),
  /** Largest message accepted, in bytes (Postfix: message_size_limit). Keep below the broker's max_message_size. */
  message_size_limit: bytes(25 * 1024 * 1024),
  /** Recipients per message (Postfix: smtpd_recipient_limit). */
  smtpd_recipient_limit: positiveInt(1000),
  /** Longest SMTP command line in bytes (Postfix: line_length_limit). */
  line_length_limit: positiveInt(2048),
  /** Error replies before 421 and disconnect (Postfix: smtpd_hard_error_limit). */
  smtpd_hard_error_limit: positiveInt(20),
  /** Idle time before the session is closed (Postfix: smtpd_timeout). */
  smtpd_timeout: duration('300s'),
  /** Simultaneous sessions (Postfix: smtpd_client_connection_count_limit is per client; this is the total). */
  smtpd_max_clients: positiveInt(500),
  /** Look up the client's reverse DNS name (Postfix: smtpd_peername_lookup). */
  smtpd_peername_lookup: bool(true),
  /** Wait before the greeting; clients that talk early are disconnected. 0 disables (Postfix: postscreen_greet_wait). */
  postscreen_greet_wait: duration('0s'),
  /** Load balancers allowed to send a PROXY protocol header (v1/v2); empty: nobody. */
  proxy_protocol_trusted_networks: cidrList([]),
  ...addressingSchema,
  /**
   * How long recipient lookups are kept in process (0: not at all). Changes made with
   * `mailyard` reach every instance at once; the TTL bounds staleness otherwise.
   */
  directory_cache_ttl: duration('60s'),
  /**
   * Ask services/policy at each SMTP stage (RPC over RabbitMQ). Off by default so that a
   * deployment without the policy service keeps working as before (only the built-in
   * relay and syntax checks); turn it on wherever the policy service runs.
   */
  policy_enabled: bool(false),
  /** How long to wait for a policy decision before connect, MAIL and RCPT. */
  policy_timeout: duration('5s'),
  /** How long to wait for the end-of-DATA decision (virus and spam scanning included). */
  policy_data_timeout: duration('60s'),
  /** No decision: smtpd_policy_service_default_action and the circuit breaker (policy-client). */
  ...policyClientSchema,
});
export type MtaInboundConfig = z.infer<typeof mtaInboundSchema>;
