import type { PolicyStage } from '@mailyard/contracts';
import { parseListAnswer, type ListAnswerFilter } from './list-answer.js';
import type { ReplyName } from './replies.js';
import { RestrictionError } from './restriction-error.js';

export { RestrictionError };

/**
 * The table of restrictions: every check a restriction list may name, with its argument
 * schema, the stages where it can decide something, what it needs to run and the reply
 * factories it answers with. `mailyard policy` validates and shows lists from it; the
 * policy service runs each check by the same name (services/policy/src/checks/<name>.ts,
 * a typed record over CheckName, so a check defined here without exactly one
 * implementation there does not compile). No I/O here: the CLI reads this table.
 */

/** One argument: how `mailyard policy checks` shows it, and its parser. */
export interface ArgSpec<T> {
  readonly usage: string;
  /** The value, or a RestrictionError saying in one sentence what is wrong with `text`. */
  parse(text: string): T;
}

/** The values of an argument schema, in order. */
export type ArgValues<A extends readonly ArgSpec<unknown>[]> = {
  -readonly [K in keyof A]: A[K] extends ArgSpec<infer T> ? T : never;
};

/**
 * What a check uses besides the request. A check runs in any process that has these:
 * the policy service has them all; an SMTP intake has the configuration, DNS, the
 * directory and the rules (access tables and user lists come with them), and asks the
 * scanners at the addresses the service publishes. Checks with `sharedState` count or
 * remember something per message in Redis that every instance must see at once, so
 * they stay where that state is kept; check_spam's greylist band, reached only by mail
 * rspamd greylists, is one atomic script and runs from the intake too.
 */
export type Need =
  | 'mynetworks'
  | 'relay-domains'
  | 'directory'
  | 'dns'
  | 'access-tables'
  | 'user-lists'
  | 'rate-counters'
  | 'greylist'
  | 'message'
  | 'clamd'
  | 'rspamd';

export interface CheckDefinition<
  A extends readonly ArgSpec<unknown>[] = readonly ArgSpec<unknown>[],
  R extends ReplyName = ReplyName,
> {
  /** One line for `mailyard policy checks`. */
  readonly help: string;
  readonly args: A;
  /**
   * The stages whose lists it may be written into: where the request carries what it
   * looks at (the sender from MAIL on, the recipient at RCPT, the message at DATA).
   */
  readonly stages: readonly PolicyStage[];
  /** Narrower stages for given arguments (a rate counter counts at one stage). */
  stagesFor?(args: ArgValues<A>): readonly PolicyStage[];
  readonly needs: readonly Need[];
  /** Reads and writes per-message state in Redis that every instance shares. */
  readonly sharedState: boolean;
  /** The named reply factories (policyReply) it answers with. */
  readonly replies: readonly R[];
}

const ALL: readonly PolicyStage[] = ['connect', 'mail', 'rcpt', 'data'];
/** Stages whose requests carry the HELO name and the sender (Postfix's smtpd_delay_reject). */
const FROM_MAIL: readonly PolicyStage[] = ['mail', 'rcpt', 'data'];

const def = <const A extends readonly ArgSpec<unknown>[], const R extends ReplyName = never>(
  d: CheckDefinition<A, R>,
): CheckDefinition<A, R> => d;

/** An access table's name: the Redis hash `policy:access:NAME`. */
export const tableArg: ArgSpec<string> = {
  usage: 'TABLE',
  parse(text) {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(text))
      throw new RestrictionError(`bad table name "${text}" (letters, digits, _ . - only)`);
    return text;
  },
};

/**
 * A DNS list zone, optionally only some of its answers: `zen.spamhaus.org=127.0.0.4`,
 * `zen.spamhaus.org=127.0.0.[2..11]` (Postfix's `rbl_domain=d.d.d.d`).
 */
export const zoneArg: ArgSpec<{ zone: string; answer: ListAnswerFilter | null }> = {
  usage: 'ZONE[=d.d.d.d]',
  parse(text) {
    const eq = text.indexOf('=');
    const zone = eq < 0 ? text : text.slice(0, eq);
    if (
      !/^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})?)*\.?$/.test(
        zone,
      )
    )
      throw new RestrictionError(`"${zone}" is not a DNS zone name`);
    return { zone, answer: eq < 0 ? null : parseListAnswer(text.slice(eq + 1)) };
  },
};

/** Rate counters (`check_rate NAME LIMIT/WINDOW`), shared across instances through Redis. */
export const RATE_COUNTERS = {
  client_connections: { help: 'connections per client IP', stage: 'connect' },
  client_messages: { help: 'messages (MAIL FROM transactions) per client IP', stage: 'mail' },
  sender_domain_messages: { help: 'messages per sender domain', stage: 'mail' },
  /** counts nothing without a SASL user */
  user_recipients: { help: 'recipients per authenticated user', stage: 'rcpt' },
  /** the window is ignored; no Redis */
  message_recipients: { help: 'recipients in one message', stage: 'rcpt' },
} as const satisfies Record<string, { help: string; stage: PolicyStage }>;
export type RateCounter = keyof typeof RATE_COUNTERS;

export const counterArg: ArgSpec<RateCounter> = {
  usage: 'COUNTER',
  parse(text) {
    if (!Object.hasOwn(RATE_COUNTERS, text))
      throw new RestrictionError(
        `unknown rate counter "${text}" (one of ${Object.keys(RATE_COUNTERS).join(', ')})`,
      );
    return text as RateCounter;
  },
};

export interface Rate {
  limit: number;
  windowMs: number;
  /** As written, for the reasons (`client_messages 201/200/1h`). */
  spec: string;
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

export const rateArg: ArgSpec<Rate> = {
  usage: 'LIMIT/WINDOW',
  parse(text) {
    const r = parseRate(text);
    if (!r) throw new RestrictionError(`bad rate "${text}", expected e.g. 30/1m`);
    return { ...r, spec: text };
  },
};

/**
 * Built-in checks, named as Postfix names them where it has them. Ordered as
 * `mailyard policy checks` lists them.
 */
export const CHECKS = {
  permit: def({
    help: 'stop this list, accept',
    args: [],
    stages: ALL,
    needs: [],
    sharedState: false,
    replies: [],
  }),
  reject: def({
    help: 'stop this list, refuse (554 5.7.1)',
    args: [],
    stages: ALL,
    needs: [],
    sharedState: false,
    replies: ['accessDenied'],
  }),
  defer: def({
    help: 'stop this list, try again later (450 4.7.1)',
    args: [],
    stages: ALL,
    needs: [],
    sharedState: false,
    replies: ['tryLater'],
  }),
  permit_mynetworks: def({
    help: 'permit clients in mynetworks',
    args: [],
    stages: ALL,
    needs: ['mynetworks'],
    sharedState: false,
    replies: [],
  }),
  permit_fcrdns_client: def({
    help: 'permit clients with forward-confirmed reverse DNS (a failed lookup does not permit)',
    args: [],
    stages: ALL,
    needs: ['dns'],
    sharedState: false,
    replies: [],
  }),
  permit_sasl_authenticated: def({
    help: 'permit authenticated (submission) clients',
    args: [],
    // at connect too: the msa asks the client list once the user has logged in (Postfix's
    // smtpd_delay_reject); on port 25 nobody is logged in when the connection opens
    stages: ALL,
    needs: [],
    sharedState: false,
    replies: [],
  }),
  reject_unauth_destination: def({
    help: 'refuse recipients outside our and relay domains',
    args: [],
    stages: ['rcpt'],
    needs: ['relay-domains', 'directory'],
    sharedState: false,
    replies: ['relayDenied'],
  }),
  reject_unknown_reverse_client_hostname: def({
    help: 'refuse clients without a PTR record',
    args: [],
    stages: ALL,
    needs: ['dns'],
    sharedState: false,
    replies: ['noReverseHostname', 'clientDnsTempFail'],
  }),
  reject_unknown_client_hostname: def({
    help: 'refuse clients without forward-confirmed reverse DNS',
    args: [],
    stages: ALL,
    needs: ['dns'],
    sharedState: false,
    replies: ['noClientHostname', 'clientDnsTempFail'],
  }),
  reject_invalid_helo_hostname: def({
    help: 'refuse HELO names with bad syntax',
    args: [],
    stages: FROM_MAIL,
    needs: [],
    sharedState: false,
    replies: ['invalidHelo'],
  }),
  reject_non_fqdn_helo_hostname: def({
    help: 'refuse HELO names that are not fully qualified',
    args: [],
    stages: FROM_MAIL,
    needs: [],
    sharedState: false,
    replies: ['nonFqdnHelo'],
  }),
  reject_non_fqdn_sender: def({
    help: 'refuse MAIL FROM without a fully-qualified domain',
    args: [],
    stages: FROM_MAIL,
    needs: [],
    sharedState: false,
    replies: ['nonFqdnSender'],
  }),
  reject_non_fqdn_recipient: def({
    help: 'refuse RCPT TO without a fully-qualified domain',
    args: [],
    stages: ['rcpt'],
    needs: [],
    sharedState: false,
    replies: ['nonFqdnRecipient'],
  }),
  reject_unknown_sender_domain: def({
    help: 'refuse sender domains without MX/A/AAAA (not our own domains)',
    args: [],
    stages: FROM_MAIL,
    needs: ['directory', 'dns'],
    sharedState: false,
    replies: ['senderDomainNotFound', 'senderDomainTempFail'],
  }),
  check_client_access: def({
    help: 'look the client IP up in access TABLE',
    args: [tableArg],
    stages: ALL,
    needs: ['access-tables'],
    sharedState: false,
    replies: ['accessRefused'],
  }),
  check_sender_access: def({
    help: 'look the sender up in access TABLE',
    args: [tableArg],
    stages: FROM_MAIL,
    needs: ['access-tables'],
    sharedState: false,
    replies: ['accessRefused'],
  }),
  check_recipient_access: def({
    help: 'look the recipient up in access TABLE',
    args: [tableArg],
    stages: ['rcpt'],
    needs: ['access-tables'],
    sharedState: false,
    replies: ['accessRefused'],
  }),
  reject_rbl_client: def({
    help: 'refuse clients listed in a DNSBL (with =127.0.0.N or =127.0.0.[2..11]: only those answers)',
    args: [zoneArg],
    stages: ALL,
    needs: ['dns'],
    sharedState: false,
    replies: ['dnsblListed', 'dnsblTempFail'],
  }),
  reject_rhsbl_sender: def({
    help: 'refuse sender domains listed in an RHSBL (with =127.0.0.N or =127.0.0.[2..11]: only those answers)',
    args: [zoneArg],
    stages: FROM_MAIL,
    needs: ['dns'],
    sharedState: false,
    replies: ['dnsblListed', 'dnsblTempFail'],
  }),
  check_policy_greylist: def({
    help: 'greylist every unknown (client, sender, recipient) triplet',
    args: [],
    stages: ['rcpt'],
    needs: ['greylist', 'dns'],
    sharedState: true,
    replies: ['greylisted'],
  }),
  check_policy_greylist_suspicious: def({
    help: 'greylist unknown triplets from clients without FCrDNS or listed in GREYLIST_DNSBL',
    args: [],
    stages: ['rcpt'],
    needs: ['greylist', 'dns'],
    sharedState: true,
    replies: ['greylisted'],
  }),
  check_rate: def({
    help: `at most LIMIT per WINDOW of a COUNTER (${Object.keys(RATE_COUNTERS).join(', ')})`,
    args: [counterArg, rateArg],
    stages: ['connect', 'mail', 'rcpt'],
    stagesFor: ([counter]) => [RATE_COUNTERS[counter].stage],
    needs: ['rate-counters'],
    sharedState: true,
    replies: [
      'tooManyRecipients',
      'tooManyConnections',
      'tooManyClientMessages',
      'tooManyDomainMessages',
      'userTooManyRecipients',
    ],
  }),
  check_user_lists: def({
    help: "recipients' own allow/block lists of senders",
    args: [],
    stages: ['rcpt'],
    needs: ['user-lists'],
    sharedState: false,
    replies: ['senderBlocked'],
  }),
  check_virus: def({
    help: 'scan with clamd (CLAMD_URL)',
    args: [],
    stages: ['data'],
    needs: ['message', 'clamd'],
    sharedState: false,
    replies: ['virusFound', 'filterUnavailable'],
  }),
  check_authentication: def({
    help: 'SPF, DKIM, DMARC and ARC; apply the DMARC policy; add Authentication-Results',
    args: [],
    stages: ['data'],
    // remembers authenticated sender domains for GREYLIST_AUTO_ALLOW_AUTHENTICATED
    needs: ['message', 'dns', 'greylist'],
    sharedState: true,
    replies: ['spfTempError', 'dmarcTempError', 'dkimTempError', 'dmarcReject'],
  }),
  reject_spf_fail: def({
    help: 'refuse mail whose SPF result is fail (needs check_authentication first)',
    args: [],
    stages: ['data'],
    needs: ['message'],
    sharedState: false,
    replies: ['spfFail'],
  }),
  check_spam: def({
    help: 'classify with rspamd (RSPAMD_URL); its greylist band greylists the message (451 4.7.1)',
    args: [],
    stages: ['data'],
    needs: ['message', 'rspamd', 'greylist', 'dns', 'mynetworks'],
    sharedState: true,
    replies: ['spam', 'spamTryLater', 'spamGreylisted', 'filterUnavailable'],
  }),
  check_bulk: def({
    help: 'mark bulk/advertising mail for the promotions folder',
    args: [],
    stages: ['data'],
    needs: ['message'],
    sharedState: false,
    replies: [],
  }),
} as const satisfies Record<string, CheckDefinition>;

export type CheckName = keyof typeof CHECKS;
export type CheckArgs<N extends CheckName> = ArgValues<(typeof CHECKS)[N]['args']>;
/** The reply factories a check declared, and only those. */
export type CheckReplyName<N extends CheckName> = (typeof CHECKS)[N]['replies'][number];

export function isCheckName(name: string): name is CheckName {
  return Object.hasOwn(CHECKS, name);
}

/** The stages where this entry can decide something. */
export function checkStages<N extends CheckName>(name: N, args: CheckArgs<N>): readonly PolicyStage[] {
  const d: CheckDefinition = CHECKS[name];
  return d.stagesFor ? d.stagesFor(args) : d.stages;
}

/** `check_rate COUNTER LIMIT/WINDOW`: how `mailyard policy checks` writes a check. */
export function checkUsage(name: CheckName): string {
  return [name, ...CHECKS[name].args.map((a: ArgSpec<unknown>) => a.usage)].join(' ');
}
