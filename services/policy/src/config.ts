import { z } from 'zod';
import { bool, commonSchema, port, positiveInt } from '@mailyard/config';
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
});
export type PolicyConfig = z.infer<typeof policySchema>;
