import { z } from 'zod';
import {
  addressingSchema,
  bool,
  checkTlsFiles,
  commonSchema,
  directoryCacheSchema,
  optionalCidrList,
  port,
  relaySchema,
  timerDuration,
} from '@mailyard/config';
import { intakeSchema } from '@mailyard/smtp-intake';

const mtaInboundKeys = z.object({
  ...commonSchema,
  /** Port 25 listener (STARTTLS). */
  smtp_port: port(25),
  /** The SMTP settings both intakes share: limits, deadlines, TLS files, the policy service. */
  ...intakeSchema,
  /** Who may relay: mynetworks, relay_domains (the policy service decides by the same). */
  ...relaySchema,
  /** Clients the per-client connection limits do not apply to; unset: mynetworks (Postfix: smtpd_client_event_limit_exceptions). */
  smtpd_client_event_limit_exceptions: optionalCidrList(),
  /** Look up the client's reverse DNS name (Postfix: smtpd_peername_lookup). */
  smtpd_peername_lookup: bool(true),
  /** Wait before the greeting; clients that talk early are disconnected. 0 disables (Postfix: postscreen_greet_wait). */
  postscreen_greet_wait: timerDuration('0s'),
  ...addressingSchema,
  ...directoryCacheSchema,
});
export const mtaInboundSchema = mtaInboundKeys.superRefine(checkTlsFiles);
export type MtaInboundConfig = z.infer<typeof mtaInboundSchema>;
