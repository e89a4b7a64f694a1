import { z } from 'zod';
import {
  bool,
  bytes,
  cidrList,
  commonSchema,
  duration,
  port,
  positiveInt,
  serviceLoginNetworksSchema,
  serviceLoginSchema,
} from '@mailyard/config';

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
  /** Simultaneous sessions over both ports. */
  smtpd_max_clients: positiveInt(500),
  /** Load balancers allowed to send a PROXY protocol header (v1/v2); empty: nobody. */
  proxy_protocol_trusted_networks: cidrList([]),
  /** Plus-addressing separator (Postfix: recipient_delimiter); alice+tag@ may send as alice@. */
  recipient_delimiter: z.string().min(1).max(1).default('+'),
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
  /**
   * No decision in time: tempfail (451 4.7.1; the user's client keeps the message and
   * retries) or continue without policy (mail leaves unscanned and unlimited).
   */
  policy_timeout_action: z.enum(['tempfail', 'continue']).default('tempfail'),
  /** The webmail's login acting for users (SASL PLAIN with an authzid): name, secret, networks. */
  ...serviceLoginSchema,
  ...serviceLoginNetworksSchema,
  /** Seconds to wait for connections to finish at shutdown. */
  shutdown_grace: duration('10s'),
});
export type MsaConfig = z.infer<typeof msaSchema>;
