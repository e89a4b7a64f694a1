import type { PolicyStage } from '@mailyard/contracts';
import {
  CHECKS,
  RestrictionError,
  checkStages,
  checkUsage,
  isCheckName,
  type ArgSpec,
  type CheckArgs,
  type CheckName,
} from './checks.js';

/**
 * Restriction lists: ordered per SMTP stage, named after Postfix's parameters, each
 * entry a check name and its arguments (`reject_rbl_client zen.example.org`). The
 * first decisive result of a list ends that list; `permit` ends it without refusing,
 * and the lists of later stages still run (as in Postfix).
 */
export const RESTRICTION_LISTS = [
  'smtpd_client_restrictions',
  'smtpd_helo_restrictions',
  'smtpd_sender_restrictions',
  'smtpd_relay_restrictions',
  'smtpd_recipient_restrictions',
  'smtpd_data_restrictions',
] as const;
export type RestrictionListName = (typeof RESTRICTION_LISTS)[number];

export function isRestrictionList(name: string): name is RestrictionListName {
  return (RESTRICTION_LISTS as readonly string[]).includes(name);
}

/** One entry of a list: a check, its arguments as written and as parsed. */
export type Restriction = {
  [N in CheckName]: { name: N; args: string[]; value: CheckArgs<N> };
}[CheckName];

/**
 * Parses one entry against the table of checks: the name, then each argument by its
 * schema. Throws RestrictionError with one sentence naming the problem. Used when a
 * list is written and when the service reads it, so an entry the table does not know
 * never reaches the engine.
 */
export function parseRestriction(text: string): Restriction {
  const parts = text.trim().split(/\s+/).filter(Boolean);
  const name = parts[0]?.toLowerCase();
  if (!name) throw new RestrictionError('empty restriction');
  if (!isCheckName(name))
    throw new RestrictionError(`unknown restriction "${name}" (mailyard policy checks lists the known ones)`);
  const spec: readonly ArgSpec<unknown>[] = CHECKS[name].args;
  const args = parts.slice(1);
  if (args.length !== spec.length)
    throw new RestrictionError(
      `${name} takes ${spec.length} ${spec.length === 1 ? 'argument' : 'arguments'}, got ${args.length} (${checkUsage(name)})`,
    );
  const value = args.map((a, i) => {
    try {
      return spec[i]!.parse(a);
    } catch (err) {
      if (err instanceof RestrictionError) throw new RestrictionError(`${name}: ${err.message}`);
      throw err;
    }
  });
  return { name, args, value } as Restriction;
}

/**
 * Why an entry can decide nothing in a list, or null. An entry is written only where
 * the request of that list's stage carries what it looks at.
 */
export function misplacement(list: RestrictionListName, r: Restriction): string | null {
  const stages = checkStages(r.name, r.value as never);
  if (stages.includes(LIST_STAGE[list])) return null;
  const stage = LIST_STAGE[list];
  const where =
    stages.length === 1
      ? `the ${stages[0]} stage (${STAGE_LISTS[stages[0]!].join(', ')})`
      : `the ${stages.slice(0, -1).join(', ')} and ${stages.at(-1)} stages`;
  return `${formatRestriction(r)} can decide nothing in ${list}, which runs at the ${stage} stage; it works at ${where}`;
}

/** Parses an entry to be written into `list`: a known check, valid arguments, a stage where it works. */
export function parseEntry(list: RestrictionListName, text: string): Restriction {
  const r = parseRestriction(text);
  const why = misplacement(list, r);
  if (why) throw new RestrictionError(why);
  return r;
}

export function formatRestriction(r: { name: string; args: string[] }): string {
  return [r.name, ...r.args].join(' ');
}

/**
 * The default set. Conservative enough for a small organisation's port 25: syntax
 * checks, DNS existence of the sender domain, relay refusal, greylisting of suspicious
 * clients only, and the content checks at DATA; for submission (a SASL user), a
 * per-user recipient rate, and no client check: the msa asks the client list only once
 * the user has logged in, and `permit_sasl_authenticated` ends it, so a user on an
 * address a DNS list names (a dynamic one) still sends, as in Postfix's submission
 * service. Greylisting every first-time sender would delay all new
 * correspondence by GREYLIST_DELAY, so only clients without forward-confirmed reverse
 * DNS or listed in GREYLIST_DNSBL are greylisted at RCPT, and mail in rspamd's greylist
 * band at the end of DATA (check_spam); a client with FCrDNS and SPF pass never is.
 * Refusing on FCrDNS or DNSBL is available but not on by default (it refuses too much
 * legitimate mail without local tuning).
 *
 * The per-client rates (connections, messages) apply only to clients without
 * forward-confirmed reverse DNS: `permit_fcrdns_client` ends the list just before them.
 * A mailing list or a large provider's outbound pool sends far more than 60 connections
 * a minute or 200 messages an hour from one address, and Postfix has no such limit by
 * default; what the rates are for (a compromised host, a botnet) rarely has FCrDNS, and
 * a real mail server's own name is there to complain to.
 */
export const DEFAULT_RESTRICTIONS: Record<RestrictionListName, string[]> = {
  smtpd_client_restrictions: [
    'permit_mynetworks',
    // a network the admin blocks is blocked for everyone, logged-in users too
    'check_client_access client_access',
    // submission users: the msa asks this list once they have logged in
    'permit_sasl_authenticated',
    // the rates below are for clients without FCrDNS (see above); nothing follows them
    'permit_fcrdns_client',
    'check_rate client_connections 60/1m',
  ],
  smtpd_helo_restrictions: [
    'permit_mynetworks',
    'permit_sasl_authenticated',
    'reject_invalid_helo_hostname',
    'reject_non_fqdn_helo_hostname',
  ],
  smtpd_sender_restrictions: [
    'permit_mynetworks',
    'permit_sasl_authenticated',
    'reject_non_fqdn_sender',
    'check_sender_access sender_access',
    'reject_unknown_sender_domain',
    'permit_fcrdns_client',
    'check_rate client_messages 200/1h',
  ],
  smtpd_relay_restrictions: ['permit_mynetworks', 'permit_sasl_authenticated', 'reject_unauth_destination'],
  smtpd_recipient_restrictions: [
    // authenticated users only (nothing to count without a SASL user), so before the permits
    'check_rate user_recipients 1000/1h',
    'permit_mynetworks',
    'permit_sasl_authenticated',
    'reject_non_fqdn_recipient',
    'check_recipient_access recipient_access',
    'check_user_lists',
    'check_policy_greylist_suspicious',
  ],
  smtpd_data_restrictions: ['check_virus', 'check_authentication', 'check_spam', 'check_bulk'],
};

/** Lists evaluated at each stage of the policy RPC, in order. */
export const STAGE_LISTS: Record<PolicyStage, RestrictionListName[]> = {
  connect: ['smtpd_client_restrictions'],
  mail: ['smtpd_helo_restrictions', 'smtpd_sender_restrictions'],
  rcpt: ['smtpd_relay_restrictions', 'smtpd_recipient_restrictions'],
  data: ['smtpd_data_restrictions'],
};

/** The stage each list runs at. */
export const LIST_STAGE: Record<RestrictionListName, PolicyStage> = {
  smtpd_client_restrictions: 'connect',
  smtpd_helo_restrictions: 'mail',
  smtpd_sender_restrictions: 'mail',
  smtpd_relay_restrictions: 'rcpt',
  smtpd_recipient_restrictions: 'rcpt',
  smtpd_data_restrictions: 'data',
};
