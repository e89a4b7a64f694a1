import { z } from 'zod';
import { POLICY_VERSION, PolicyDecision, type PolicyReason, type PolicyReply } from '@mailyard/contracts';
import { duration, positiveInt } from '@mailyard/config';

/** What a session gets when the policy service does not answer. */
export type PolicyDefaultAction =
  { action: 'continue' } | { action: 'tempfail' | 'reject'; reply: PolicyReply };

/** The decision a session gets instead of the policy's, with the reason it was not given. */
export function defaultDecision(d: PolicyDefaultAction, reason: PolicyReason): PolicyDecision {
  return PolicyDecision.parse({ v: POLICY_VERSION, ...d, reasons: [reason] });
}

/**
 * Postfix's smtpd_policy_service_default_action syntax: `DUNNO` (go on without policy) or
 * a reply, `4NN [4.X.Y] text` or `5NN [5.X.Y] text`; without an enhanced status code the
 * reply gets X.7.1, as a Postfix access table reply does. Null when it is neither.
 */
export function parseDefaultAction(text: string): PolicyDefaultAction | null {
  const t = text.trim();
  if (/^DUNNO$/i.test(t)) return { action: 'continue' };
  const m = /^([45])(\d\d)(?:\s+([45])\.(\d{1,3}\.\d{1,3}))?(?:\s+(\S.*))?$/.exec(t);
  if (!m || (m[3] !== undefined && m[3] !== m[1])) return null;
  const reply = {
    code: Number(m[1]! + m[2]!),
    enhanced: m[3] !== undefined ? `${m[3]}.${m[4]}` : `${m[1]}.7.1`,
    text: m[5] ?? 'Policy service unavailable',
  };
  return { action: m[1] === '4' ? 'tempfail' : 'reject', reply };
}

/** The config keys of a listener that asks the policy service (mta-inbound, msa). */
export const policyClientSchema = {
  /**
   * What a session gets when the policy service does not answer in time or the broker is
   * unreachable (Postfix: smtpd_policy_service_default_action, same syntax and default):
   * a reply such as `451 4.3.5 Server configuration problem`, or `DUNNO` to go on
   * without policy (mail unchecked and unlimited). At connect a 4xx becomes 421.
   */
  smtpd_policy_service_default_action: z
    .string()
    .transform((v, ctx) => {
      const parsed = parseDefaultAction(v);
      if (!parsed) {
        ctx.addIssue({
          code: 'custom',
          message: 'expected DUNNO or a reply such as "451 4.3.5 Server configuration problem"',
        });
        return z.NEVER;
      }
      return parsed;
    })
    .prefault('451 4.3.5 Server configuration problem'),
  /** Policy requests in a row without an answer after which the rest get the default action at once. */
  policy_breaker_threshold: positiveInt(3),
  /** How long they do; then one request asks again, and its answer resumes asking. */
  policy_breaker_open_time: duration('5s'),
};
