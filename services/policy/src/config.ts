import { z } from 'zod';
import {
  bool,
  clientEndpointsSchema,
  commonSchema,
  duration,
  port,
  positiveInt,
  relaySchema,
  sendingAddressSchema,
  stringList,
  tlsFilesSchema,
} from '@mailyard/config';

/** A URL with one of `protocols`, or empty for "not used". */
const optionalUrl = (protocols: string[]) =>
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

export const policySchema = z.object({
  ...commonSchema,
  /** Who permit_mynetworks and reject_unauth_destination let through: mta-inbound's mynetworks, relay_domains. */
  ...relaySchema,
  /** authserv-id of our Authentication-Results headers (RFC 8601 §2.5); defaults to myhostname. */
  authserv_id: z.string().optional(),
  /** Requests handled at once (AMQP prefetch of the policy queue). */
  policy_prefetch: positiveInt(64),
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
  /** rspamd's controller worker for learning, e.g. http://127.0.0.1:11334 (unset: no learning). */
  rspamd_controller_url: optionalUrl(['http', 'https']),
  /** Password of rspamd's controller (the `password`/`enable_password` setting), if any. */
  rspamd_password: z.string().optional(),
  /** What rspamd's `reject` action does: refuse at DATA, or accept into Junk. */
  rspamd_reject_action: z.enum(['reject', 'quarantine']).default('reject'),
  /** clamd over TCP, e.g. tcp://127.0.0.1:3310 (unset: no virus scan). */
  clamd_url: optionalUrl(['tcp']),
  /** When rspamd or clamd fail or time out: tempfail (4xx, the sender retries) or accept with a header. */
  content_filter_failure: z.enum(['tempfail', 'accept']).default('tempfail'),
  /** Timeout of one rspamd or clamd request. */
  content_filter_timeout: duration('20s'),
  /** How long the reasons of refused or held mail stay available to `mailyard policy explain`. */
  explain_ttl: duration('7d'),
  /** Postfix policy delegation protocol (check_policy_service inet:host:port). */
  policy_delegation_enabled: bool(true),
  policy_delegation_port: port(10040),
  /**
   * How often the DNS and deliverability checks run (records of every local domain, the
   * server's forward and reverse DNS, blocklists, certificate expiry), exported as
   * metrics for the alert rules; each run is moved by up to a tenth of this at random so
   * instances do not ask at once. 0: never.
   */
  dns_check_interval: duration('5m'),
  /** The addresses the checks expect MYHOSTNAME to resolve to (outbound-relay's source addresses). */
  ...sendingAddressSchema,
  /** The client ports the checks expect in the SRV records (as the webmail's autoconfig gives them). */
  ...clientEndpointsSchema,
  /** The certificate whose expiry the checks export (the same file as the listeners'). */
  ...tlsFilesSchema,
});
export type PolicyConfig = z.infer<typeof policySchema>;
