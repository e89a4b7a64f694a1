import { z } from 'zod';
import {
  addressingSchema,
  authservSchema,
  bool,
  duration,
  relaySchema,
  stringList,
  timerDuration,
} from '@mailyard/config';

/** A URL with one of `protocols`, or empty for "not used". */
export const optionalUrl = (protocols: string[]) =>
  z
    .string()
    .default('')
    .refine(
      (v) => {
        if (v === '') return true;
        try {
          return protocols.includes(new URL(v).protocol.replace(/:$/, ''));
        } catch {
          return false;
        }
      },
      { message: `expected a URL (${protocols.map((p) => p + '://').join(' or ')}) or nothing` },
    );

/**
 * What the checks and decisions read: spread into the policy service's schema; an SMTP
 * intake deciding cheap stages itself builds the same from its own MYNETWORKS,
 * RELAY_DOMAINS and MYHOSTNAME and these defaults (it runs none of the checks that
 * read the rest).
 */
export const policyEngineSchema = {
  /** Who permit_mynetworks and reject_unauth_destination let through: mta-inbound's mynetworks, relay_domains. */
  ...relaySchema,
  /**
   * The plus-address separator mta-inbound and delivery resolve by: an access table entry
   * or a user's own lists for `alice@` hold for `alice+tag@` too (Postfix access(5)).
   */
  ...addressingSchema,
  /** authserv-id of our Authentication-Results headers (RFC 8601 §2.5); defaults to myhostname. */
  ...authservSchema,
  /** Greylisting: how long an unknown triplet is deferred (postgrey: delay). */
  greylist_delay: duration('300s'),
  /** Greylisting: how long a passed triplet (and its client network) is remembered. */
  greylist_pass_ttl: duration('35d'),
  /** Greylisting: how long a deferred triplet waits for its retry before it is forgotten. */
  greylist_retry_window: duration('2d'),
  /** Greylisting: let clients with forward-confirmed reverse DNS through once their network passed before. */
  greylist_auto_allow_fcrdns: bool(true),
  /** Greylisting: let a sender domain through once its mail was accepted authenticated (SPF or DKIM),
   *  when the new attempt passes SPF. */
  greylist_auto_allow_authenticated: bool(false),
  /** Greylisting (check_policy_greylist_suspicious): DNSBL zones whose listed clients are greylisted
   *  even with forward-confirmed reverse DNS, unless the sender's SPF passes. */
  greylist_dnsbl: stringList([]),
  /** rspamd's normal worker, e.g. http://127.0.0.1:11333 (unset: no spam filter). */
  rspamd_url: optionalUrl(['http', 'https']),
  /** What rspamd's `reject` action does: refuse at DATA, or accept into Junk. */
  rspamd_reject_action: z.enum(['reject', 'quarantine']).default('reject'),
  /** clamd over TCP, e.g. tcp://127.0.0.1:3310 (unset: no virus scan). */
  clamd_url: optionalUrl(['tcp']),
  /** When rspamd or clamd fail or time out: tempfail (4xx, the sender retries) or accept with a header. */
  content_filter_failure: z.enum(['tempfail', 'accept']).default('tempfail'),
  /** Timeout of one rspamd or clamd request. */
  content_filter_timeout: timerDuration('20s'),
  /** How long the reasons of refused or held mail stay available to `mailyard policy explain`. */
  explain_ttl: duration('7d'),
};
export type PolicyEngineConfig = z.infer<z.ZodObject<typeof policyEngineSchema>> & { myhostname: string };

const settingsSchema = z.object({ ...policyEngineSchema, myhostname: z.string().min(1) });

/**
 * The policy service's check settings as it publishes them (PolicyKeys.engineConfig):
 * written as its environment would be (durations in ms, lists comma-separated), so the
 * reader validates them with the same schema.
 */
export function engineSettings(config: PolicyEngineConfig): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of [...Object.keys(policyEngineSchema), 'myhostname'] as (keyof PolicyEngineConfig)[]) {
    const v = config[key];
    if (v === undefined) continue;
    out[key] = Array.isArray(v) ? v.join(',') : typeof v === 'number' ? `${v}ms` : String(v);
  }
  // what this service answers beyond the first contract: a RCPT carrying MAIL (withMail)
  out[MAIL_WITH_RCPT] = 'yes';
  return out;
}

/** The published setting saying the service decides a RCPT that carries its MAIL stage. */
export const MAIL_WITH_RCPT = 'mail_with_rcpt';

/**
 * Reads what engineSettings wrote: the check settings (a ZodError naming the bad keys
 * when they are wrong) and whether the service takes withMail.
 */
export function parseEngineSettings(json: string): { config: PolicyEngineConfig; mailWithRcpt: boolean } {
  const raw = JSON.parse(json) as Record<string, unknown>;
  return { config: settingsSchema.parse(raw), mailWithRcpt: raw[MAIL_WITH_RCPT] === 'yes' };
}
