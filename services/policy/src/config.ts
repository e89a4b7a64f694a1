import { z } from 'zod';
import {
  bool,
  clientEndpointsSchema,
  commonSchema,
  port,
  positiveInt,
  sendingAddressSchema,
  timerDuration,
  tlsFilesSchema,
} from '@mailyard/config';
import { optionalUrl, policyEngineSchema } from '@mailyard/policy-engine';

export const policySchema = z.object({
  ...commonSchema,
  /** The checks' settings: relay, greylisting, content filters, explain (@mailyard/policy-engine). */
  ...policyEngineSchema,
  /** Requests handled at once (AMQP prefetch of the policy queue). */
  policy_prefetch: positiveInt(64),
  /** rspamd's controller worker for learning, e.g. http://127.0.0.1:11334 (unset: no learning). */
  rspamd_controller_url: optionalUrl(['http', 'https']),
  /** Password of rspamd's controller (the `password`/`enable_password` setting), if any. */
  rspamd_password: z.string().optional(),
  /** Postfix policy delegation protocol (check_policy_service inet:host:port). */
  policy_delegation_enabled: bool(true),
  policy_delegation_port: port(10040),
  /**
   * How often the DNS and deliverability checks run (records of every local domain, the
   * server's forward and reverse DNS, blocklists, certificate expiry), exported as
   * metrics for the alert rules; each run is moved by up to a tenth of this at random so
   * instances do not ask at once. 0: never.
   */
  dns_check_interval: timerDuration('5m'),
  /** The addresses the checks expect MYHOSTNAME to resolve to (outbound-relay's source addresses). */
  ...sendingAddressSchema,
  /** The client ports the checks expect in the SRV records (as the webmail's autoconfig gives them). */
  ...clientEndpointsSchema,
  /** The certificate whose expiry the checks export (the same file as the listeners'). */
  ...tlsFilesSchema,
});
export type PolicyConfig = z.infer<typeof policySchema>;
