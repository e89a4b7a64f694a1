import type { ChainableCommander } from 'ioredis';
import type { PolicyReason, PolicyReply, PolicyRequest } from '@mailyard/contracts';
import type { Directory } from '@mailyard/directory';
import type { MailResolver } from '@mailyard/dns';
import type { Logger } from '@mailyard/observability';
import { domainOf as addressDomain } from '@mailyard/smtp-core';
import type { CheckArgs, CheckName, CheckReplyName, PolicyReplies } from '@mailyard/policy-rules';
import type { AccessTableSource } from './access-copy.js';
import type { UserListCopy } from './user-list-copy.js';
import type { PolicyEngineConfig } from './config.js';
import type { PolicyMetrics } from './metrics.js';
import type { PolicyRedis } from './redis-scripts.js';

/**
 * What one check answers, Haraka-style: nothing to say (`dunno`, the next entry runs),
 * `permit` (ends this list), `refuse` (ends the stage with a reply), `hold` (file into
 * Junk and go on), `discard` (250, then drop).
 */
export type Verdict =
  | { kind: 'dunno' }
  | { kind: 'permit' }
  | { kind: 'refuse'; action: 'reject' | 'tempfail'; reply: PolicyReply }
  | { kind: 'discard' }
  | { kind: 'hold' };

export const DUNNO: Verdict = { kind: 'dunno' };
export const PERMIT: Verdict = { kind: 'permit' };
export const HOLD: Verdict = { kind: 'hold' };
export const DISCARD: Verdict = { kind: 'discard' };
/** A refusal with a reply from policyReply: 5xx rejects, 4xx defers. */
export const refuse = (reply: PolicyReply): Verdict => ({
  kind: 'refuse',
  action: reply.code >= 500 ? 'reject' : 'tempfail',
  reply,
});

/** What checks run with, the same for every request. */
export interface CheckEnv {
  config: PolicyEngineConfig;
  redis: PolicyRedis;
  directory: Directory;
  resolver: MailResolver;
  logger: Logger;
  metrics: PolicyMetrics;
  /** Milliseconds since the epoch; tests pass a controllable clock. */
  now: () => number;
  /** authserv-id of our Authentication-Results (AUTHSERV_ID, else MYHOSTNAME). */
  authservId: string;
  /** RELAY_DOMAINS, lower-case, in A-labels. */
  relayDomains: ReadonlySet<string>;
  /** The access tables in process, when the holder trusts its copy now; absent or null: read Redis. */
  accessTables?: () => AccessTableSource | null;
  /** The user lists in process, likewise. */
  userLists?: () => UserListCopy | null;
}

/** One request being decided: what checks read, and what they leave for later ones. */
export interface CheckContext {
  readonly env: CheckEnv;
  readonly req: PolicyRequest;
  /** The message, at the data stage. */
  readonly message: Buffer | null;
  reasons: PolicyReason[];
  /** Headers to prepend at the data stage, and to remove. */
  headers: { name: string; value: string }[];
  removeHeaders: { name: string; valuePrefix?: string }[];
  bulk: boolean;
  /** An access table lookup, read in the stage's pipeline: key → first matching action text. */
  access: Map<string, string | null>;
  /** Recipients whose own allow / block list holds the sender. */
  allowed: Set<string>;
  blocked: Set<string>;
  /** Plus-addresses and the account whose lists are theirs (resolveListOwners). */
  listOwners: Map<string, string>;
  /** SPF result from check_authentication, for reject_spf_fail and the greylist band. */
  spf: string | null;
  /** rspamd's symbols from check_spam, for check_bulk. */
  rspamdSymbols: string[];
  roundTrips: number;
  /** Decided where the SMTP session runs (an intake), not in the policy service. */
  readonly local: boolean;
  /** Aborted when the session stops waiting for the decision: requests to the scanners end. */
  readonly signal?: AbortSignal;
}

/**
 * Thrown by a check decided in an intake that cannot do its work from there (a scanner
 * it cannot reach): the policy service decides the whole stage instead.
 */
export class LeaveToService extends Error {
  override readonly name = 'LeaveToService';
}

/** Records a result: the reasons (X-Mailyard-Policy, explain, the log) and the metric. */
export function note(
  ctx: CheckContext,
  check: string,
  result: string,
  detail?: string,
  score?: number,
): void {
  ctx.env.metrics.checks.inc({ check, result });
  const r: PolicyReason = { check, result };
  if (detail !== undefined) r.detail = detail;
  if (score !== undefined) r.score = score;
  ctx.reasons.push(r);
}

/** Redis reads of one stage, sent as one pipeline before its first check runs. */
export interface RedisBatch {
  /** Queues a read once per `key`; `take` gets its answer. */
  read(key: string, queue: (p: ChainableCommander) => unknown, take: (value: unknown) => void): void;
}

/**
 * How a check runs. The definition (arguments, stages, replies) is the entry of the
 * same name in CHECKS (@mailyard/policy-rules); `args` arrive parsed by its schema, and
 * `reply` holds only the reply factories the definition declares.
 */
export interface CheckImplementation<N extends CheckName> {
  /**
   * Whether this entry can be decided for this request where the SMTP session runs
   * (an intake), without shared state or heavy work: cached DNS, access tables and
   * user lists read in the stage's pipeline. Absent: from the check's `needs` in CHECKS.
   */
  local?(ctx: CheckContext, args: CheckArgs<N>): boolean | Promise<boolean>;
  /** Queues the Redis reads the entry will make, so a stage costs one round trip for them all. */
  prefetch?(ctx: CheckContext, args: CheckArgs<N>, batch: RedisBatch): void;
  run(
    ctx: CheckContext,
    args: CheckArgs<N>,
    reply: Pick<PolicyReplies, CheckReplyName<N>>,
  ): Verdict | Promise<Verdict>;
}

/**
 * The domain of an address as DNS and the directory know it: lower case, an
 * internationalized one (SMTPUTF8 `x@bücher.example`) in its A-labels, as mta-inbound
 * routes it; an address literal as written.
 */
export const domainOf = (address: string): string => addressDomain(address);

/** Whether we are final destination for `domain`: from the directory's cache, or one round trip. */
export async function isLocalDomain(ctx: CheckContext, domain: string): Promise<boolean> {
  const known = ctx.env.directory.cachedLocalDomain(domain);
  if (known !== undefined) return known;
  ctx.roundTrips++;
  return ctx.env.directory.isLocalDomain(domain);
}
