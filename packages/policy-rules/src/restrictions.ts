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

/** Rate counters (`check_rate NAME LIMIT/WINDOW`), shared across instances through Redis. */
export const RATE_COUNTERS = {
  /** connections per client IP (connect stage) */
  client_connections: 'connections per client IP',
  /** messages (MAIL FROM transactions) per client IP */
  client_messages: 'messages per client IP',
  /** messages per sender domain */
  sender_domain_messages: 'messages per sender domain',
  /** recipients per authenticated user over the window */
  user_recipients: 'recipients per authenticated user',
  /** recipients in one message (window ignored; no Redis) */
  message_recipients: 'recipients per message',
} as const;
export type RateCounter = keyof typeof RATE_COUNTERS;

/** Built-in checks: name → number of arguments, and the stages where they make sense. */
export const CHECKS: Record<string, { args: number; help: string }> = {
  permit: { args: 0, help: 'stop this list, accept' },
  reject: { args: 0, help: 'stop this list, refuse (554 5.7.1)' },
  defer: { args: 0, help: 'stop this list, try again later (450 4.7.1)' },
  permit_mynetworks: { args: 0, help: 'permit clients in mynetworks' },
  permit_sasl_authenticated: { args: 0, help: 'permit authenticated (submission) clients' },
  reject_unauth_destination: { args: 0, help: 'refuse recipients outside our and relay domains' },
  reject_unknown_reverse_client_hostname: { args: 0, help: 'refuse clients without a PTR record' },
  reject_unknown_client_hostname: { args: 0, help: 'refuse clients without forward-confirmed reverse DNS' },
  reject_invalid_helo_hostname: { args: 0, help: 'refuse HELO names with bad syntax' },
  reject_non_fqdn_helo_hostname: { args: 0, help: 'refuse HELO names that are not fully qualified' },
  reject_non_fqdn_sender: { args: 0, help: 'refuse MAIL FROM without a fully-qualified domain' },
  reject_non_fqdn_recipient: { args: 0, help: 'refuse RCPT TO without a fully-qualified domain' },
  reject_unknown_sender_domain: {
    args: 0,
    help: 'refuse sender domains without MX/A/AAAA (not our own domains)',
  },
  check_client_access: { args: 1, help: 'look the client IP up in access TABLE' },
  check_sender_access: { args: 1, help: 'look the sender up in access TABLE' },
  check_recipient_access: { args: 1, help: 'look the recipient up in access TABLE' },
  reject_rbl_client: { args: 1, help: 'refuse clients listed in DNSBL ZONE[=127.0.0.N]' },
  reject_rhsbl_sender: { args: 1, help: 'refuse sender domains listed in RHSBL ZONE[=127.0.0.N]' },
  check_policy_greylist: { args: 0, help: 'greylist every unknown (client, sender, recipient) triplet' },
  check_policy_greylist_suspicious: {
    args: 0,
    help: 'greylist unknown triplets from clients without FCrDNS or listed in GREYLIST_DNSBL',
  },
  check_rate: { args: 2, help: 'rate limit: check_rate COUNTER LIMIT/WINDOW' },
  check_user_lists: { args: 0, help: "recipients' own allow/block lists of senders" },
  check_virus: { args: 0, help: 'scan with clamd (CLAMD_URL)' },
  check_authentication: {
    args: 0,
    help: 'SPF, DKIM, DMARC and ARC; apply the DMARC policy; add Authentication-Results',
  },
  reject_spf_fail: {
    args: 0,
    help: 'refuse mail whose SPF result is fail (needs check_authentication first)',
  },
  check_spam: {
    args: 0,
    help: 'classify with rspamd (RSPAMD_URL); its greylist band greylists the message (451 4.7.1)',
  },
  check_bulk: { args: 0, help: 'mark bulk/advertising mail for the promotions folder' },
};

export interface Restriction {
  name: string;
  args: string[];
}

export class RestrictionError extends Error {
  override readonly name = 'RestrictionError';
}

/** Parses one entry; throws RestrictionError with one sentence naming the problem. */
export function parseRestriction(text: string): Restriction {
  const parts = text.trim().split(/\s+/).filter(Boolean);
  const name = parts[0]?.toLowerCase();
  if (!name) throw new RestrictionError('empty restriction');
  const spec = CHECKS[name];
  if (!spec) throw new RestrictionError(`unknown restriction "${name}"`);
  const args = parts.slice(1);
  if (args.length !== spec.args)
    throw new RestrictionError(`${name} takes ${spec.args} argument(s), got ${args.length}`);
  if (name === 'check_rate') {
    if (!(args[0]! in RATE_COUNTERS))
      throw new RestrictionError(
        `unknown rate counter "${args[0]}" (one of ${Object.keys(RATE_COUNTERS).join(', ')})`,
      );
    if (!parseRate(args[1]!)) throw new RestrictionError(`bad rate "${args[1]}", expected e.g. 30/1m`);
  }
  return { name, args };
}

export function formatRestriction(r: Restriction): string {
  return [r.name, ...r.args].join(' ');
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `30/1m` → 30 per minute; `100/1h`; a bare number is per hour. */
export function parseRate(text: string): { limit: number; windowMs: number } | null {
  const m = /^(\d+)(?:\/(\d*)([smhd]))?$/.exec(text);
  if (!m) return null;
  const limit = Number(m[1]);
  const windowMs = m[3] ? Number(m[2] || 1) * UNIT_MS[m[3]]! : 3_600_000;
  if (!(limit > 0) || !(windowMs > 0)) return null;
  return { limit, windowMs };
}

/**
 * The default set. Conservative enough for a small organisation's port 25: syntax
 * checks, DNS existence of the sender domain, relay refusal, greylisting of suspicious
 * clients only, and the content checks at DATA; for submission (a SASL user), a
 * per-user recipient rate. Greylisting every first-time sender would delay all new
 * correspondence by GREYLIST_DELAY, so only clients without forward-confirmed reverse
 * DNS or listed in GREYLIST_DNSBL are greylisted at RCPT, and mail in rspamd's greylist
 * band at the end of DATA (check_spam); a client with FCrDNS and SPF pass never is.
 * Refusing on FCrDNS or DNSBL is available but not on by default (it refuses too much
 * legitimate mail without local tuning).
 */
export const DEFAULT_RESTRICTIONS: Record<RestrictionListName, string[]> = {
  smtpd_client_restrictions: [
    'permit_mynetworks',
    'check_client_access client_access',
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
export const STAGE_LISTS: Record<'connect' | 'mail' | 'rcpt' | 'data', RestrictionListName[]> = {
  connect: ['smtpd_client_restrictions'],
  mail: ['smtpd_helo_restrictions', 'smtpd_sender_restrictions'],
  rcpt: ['smtpd_relay_restrictions', 'smtpd_recipient_restrictions'],
  data: ['smtpd_data_restrictions'],
};
