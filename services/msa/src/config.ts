import { z } from 'zod';
import {
  addressingSchema,
  bool,
  bytes,
  cidrList,
  commonSchema,
  duration,
  nonNegativeInt,
  port,
  positiveDuration,
  positiveInt,
  serviceLoginNetworksSchema,
  serviceLoginSchema,
} from '@mailyard/config';
import { policyClientSchema } from '@mailyard/policy-client';

export const msaSchema = z.object({
  ...commonSchema,
  /** Submission port with STARTTLS; AUTH only after TLS (RFC 6409). */
  submission_port: port(587),
  /** Submission port with implicit TLS (RFC 8314 §3.3). */
  submissions_port: port(465),
  /** PEM certificate and key; when unset a self-signed pair is generated at start (clients will warn). */
  tls_cert_file: z.string().optional(),
  tls_key_file: z.string().optional(),
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
  /**
   * smtpd_timeout bounds a whole command line, and the message at smtpd_min_data_rate,
   * not only the gaps between bytes (Postfix 3.7's smtpd_per_request_deadline, which
   * Postfix turns on under stress). On by default: otherwise a client sending a byte
   * every few seconds holds its slot forever, and no client needs smtpd_timeout for a line.
   */
  smtpd_per_request_deadline: bool(true),
  /** Bytes a second a message must arrive at under the per-request deadline (Postfix: smtpd_min_data_rate). */
  smtpd_min_data_rate: positiveInt(500),
  /**
   * Time from connect to a successful AUTH, however active the client is; past it
   * 421 4.7.0 (Dovecot gives its login processes 3 minutes, CLIENT_LOGIN_TIMEOUT_MSECS).
   */
  login_timeout: positiveDuration('3m'),
  /** Simultaneous sessions over both ports. */
  smtpd_max_clients: positiveInt(500),
  /** Simultaneous sessions from one client address (IPv6: one /64), per port, in this process; 0: no limit. */
  smtpd_client_connection_count_limit: nonNegativeInt(50),
  /**
   * New connections per minute from one client address, per port, over all instances
   * (Redis); 0: no limit. 300 as on port 25 (mox's default): far above what mail
   * clients behind one address need, a bound on the TLS handshakes one address costs.
   */
  smtpd_client_connection_rate_limit: nonNegativeInt(300),
  /**
   * Clients the two limits above do not apply to (Postfix: smtpd_client_event_limit_exceptions,
   * $mynetworks there); loopback by default, where a webmail on the same host submits from.
   */
  smtpd_client_event_limit_exceptions: cidrList(['127.0.0.0/8', '::1/128']),
  /** Load balancers allowed to send a PROXY protocol header (v1/v2); empty: nobody. */
  proxy_protocol_trusted_networks: cidrList([]),
  ...addressingSchema,
  /**
   * Name the client's IP address and host name in the Received header we add. Off by
   * default: the submitting user's address is nobody else's business.
   */
  submission_received_client: bool(false),
  /** Sign with the DKIM keys of the From: domain (keys are managed with `mailyard dkim`). */
  dkim_signing: bool(true),
  /**
   * Ask services/policy at connect, MAIL FROM, RCPT TO and end of DATA (per-user and
   * per-domain rate limits, virus scanning). Off by default like mta-inbound's, so a
   * deployment without the policy service keeps working; docker-compose.yml turns it on.
   */
  policy_enabled: bool(false),
  /** How long to wait for a policy decision before connect, MAIL and RCPT. */
  policy_timeout: duration('5s'),
  /** How long to wait for the end-of-DATA decision (virus scanning included). */
  policy_data_timeout: duration('60s'),
  /** No decision: smtpd_policy_service_default_action and the circuit breaker (policy-client). */
  ...policyClientSchema,
  /** The webmail's login acting for users (SASL PLAIN with an authzid): name, secret, networks. */
  ...serviceLoginSchema,
  ...serviceLoginNetworksSchema,
});
export type MsaConfig = z.infer<typeof msaSchema>;
