import { z } from 'zod';
import {
  addressingSchema,
  bool,
  cidrList,
  checkTlsFiles,
  commonSchema,
  loginSchema,
  port,
  serviceLoginNetworksSchema,
  serviceLoginSchema,
} from '@mailyard/config';
import { intakeSchema } from '@mailyard/smtp-intake';

const msaKeys = z.object({
  ...commonSchema,
  /** Submission port with STARTTLS; AUTH only after TLS (RFC 6409). */
  submission_port: port(587),
  /** Submission port with implicit TLS (RFC 8314 §3.3). */
  submissions_port: port(465),
  /** The SMTP settings both intakes share: limits, deadlines, TLS files, the policy service. */
  ...intakeSchema,
  /** Time from connect to a successful AUTH; past it 421 4.7.0. */
  ...loginSchema,
  /**
   * Clients the per-client connection limits do not apply to (Postfix:
   * smtpd_client_event_limit_exceptions, $mynetworks there); loopback by default, where
   * a webmail on the same host submits from.
   */
  smtpd_client_event_limit_exceptions: cidrList(['127.0.0.0/8', '::1/128']),
  ...addressingSchema,
  /**
   * Name the client's IP address and host name in the Received header we add. Off by
   * default: the submitting user's address is nobody else's business.
   */
  submission_received_client: bool(false),
  /** Sign with the DKIM keys of the From: domain (keys are managed with `mailyard dkim`). */
  dkim_signing: bool(true),
  /** The webmail's login acting for users (SASL PLAIN with an authzid): name, secret, networks. */
  ...serviceLoginSchema,
  ...serviceLoginNetworksSchema,
});
export const msaSchema = msaKeys.superRefine(checkTlsFiles);
export type MsaConfig = z.infer<typeof msaSchema>;
