import type { ChainableCommander, Redis } from 'ioredis';
import { authservIdOf } from '@mailyard/config';
import { POLICY_VERSION, type PolicyDecision, type PolicyRequest } from '@mailyard/contracts';
import type { Directory } from '@mailyard/directory';
import type { MailResolver } from '@mailyard/dns';
import type { Logger } from '@mailyard/observability';
import { normalizeDomain, ownHeaderRemovals } from '@mailyard/smtp-core';
import {
  CHECKS,
  STAGE_LISTS,
  policyReply,
  type CheckName,
  type Restriction,
  type RuleSet,
} from '@mailyard/policy-rules';
import {
  DUNNO,
  LeaveToService,
  note,
  refuse,
  type CheckContext,
  type CheckEnv,
  type CheckImplementation,
  type RedisBatch,
  type Verdict,
} from './check-context.js';
import { queueUserLists, resolveListOwners } from './checks/check-user-lists.js';
import { CHECK_IMPLEMENTATIONS } from './checks/index.js';
import type { AccessTableSource } from './access-copy.js';
import type { UserListCopy } from './user-list-copy.js';
import type { PolicyEngineConfig } from './config.js';
import type { PolicyMetrics } from './metrics.js';
import { withPolicyScripts } from './redis-scripts.js';

export interface EngineDeps {
  redis: Redis;
  directory: Directory;
  resolver: MailResolver;
  logger: Logger;
  metrics: PolicyMetrics;
  /** Current rules (reloaded live by the service). */
  rules: () => RuleSet;
  /** An intake's copy of the access tables, when it may answer; without it every lookup reads Redis. */
  accessTables?: () => AccessTableSource | null;
  /** An intake's copy of the user lists, likewise. */
  userLists?: () => UserListCopy | null;
  /** Milliseconds since the epoch; tests pass a controllable clock. */
  now: () => number;
}

/** The implementation of a check (checks/<name>.ts), by its name in the table. */
function implementation<N extends CheckName>(name: N): CheckImplementation<N> {
  return CHECK_IMPLEMENTATIONS[name];
}

/**
 * What an intake has at hand: its cached resolver, the directory, one Redis pipeline per
 * stage, and at DATA the message it received.
 */
const LOCAL_NEEDS: ReadonlySet<string> = new Set([
  'mynetworks',
  'relay-domains',
  'directory',
  'dns',
  'access-tables',
  'user-lists',
  'message',
]);

/** Whether entry `r` can be decided for this request without the policy service. */
async function decidableHere(ctx: CheckContext, r: Restriction): Promise<boolean> {
  const impl: CheckImplementation<CheckName> = implementation(r.name);
  if (impl.local) return impl.local(ctx, r.value);
  return CHECKS[r.name].needs.every((n) => LOCAL_NEEDS.has(n));
}

/** How an intake asks (see decide). */
export interface LocalOptions {
  local: true;
  current?: (batch: RedisBatch) => () => boolean;
  /**
   * Aborted when the session stops waiting (POLICY_DATA_TIMEOUT): the scanner requests
   * under way end, and no further check runs.
   */
  signal?: AbortSignal;
}

/** A decision, and the Redis round trips it cost. */
export type EngineDecision = PolicyDecision & { roundTrips: number };

/**
 * Runs the restriction lists of one stage in order, Haraka-style: each entry is a
 * check module that returns a verdict, and the first decisive one wins; `permit` ends
 * the current list; HOLD marks the message for Junk and goes on. Redis reads the
 * entries declare (user lists and access tables an intake's copy does not answer) are
 * fetched in one pipeline before the first check, so a stage costs at most one round
 * trip plus one per greylist or rate-limit check that is reached.
 */
export function createEngine(config: PolicyEngineConfig, deps: EngineDeps) {
  const { logger } = deps;
  const env: CheckEnv = {
    config,
    redis: withPolicyScripts(deps.redis),
    directory: deps.directory,
    resolver: deps.resolver,
    logger,
    metrics: deps.metrics,
    now: deps.now,
    authservId: authservIdOf(config),
    relayDomains: new Set(config.relay_domains.map((d) => normalizeDomain(d) ?? d.toLowerCase())),
    ...(deps.accessTables ? { accessTables: deps.accessTables } : {}),
    ...(deps.userLists ? { userLists: deps.userLists } : {}),
  };

  /** One pipeline with everything the entries of this stage will read. */
  const prefetch = async (
    ctx: CheckContext,
    entries: Restriction[],
    extra?: (batch: RedisBatch) => void,
  ): Promise<void> => {
    // made at the first read: most stages of a running intake read nothing (its copies answer)
    let p: ChainableCommander | null = null;
    const takes: ((v: unknown) => void)[] = [];
    const queued = new Set<string>();
    const batch: RedisBatch = {
      read(key, queue, take) {
        if (queued.has(key)) return;
        queued.add(key);
        queue((p ??= env.redis.pipeline()));
        takes.push(take);
      },
    };
    extra?.(batch);
    for (const r of entries) implementation(r.name).prefetch?.(ctx, r.value, batch);
    // whose own allow list holds the sender decides who is spared Junk
    if (ctx.req.stage === 'data') queueUserLists(ctx, batch, ctx.req.recipients);
    if (!p) return;
    const res = await (p as ChainableCommander).exec();
    ctx.roundTrips++;
    // an answer missing is a failure, never "no entry" (which reads as DUNNO)
    if (res?.length !== takes.length) throw new Error('incomplete answer from Redis');
    res.forEach(([err, v], i) => {
      if (err) throw err;
      takes[i]!(v);
    });
  };

  /** Decides one request. Never throws: an internal error becomes a tempfail. */
  async function decide(req: PolicyRequest, message: Buffer | null): Promise<EngineDecision>;
  /**
   * With `local`, as an SMTP intake decides: null as soon as an entry reached needs the
   * policy service (shared state, a DNS list, a scanner), which then decides the whole
   * stage again; the entries before it are cheap and give the same answers there.
   * `current` queues reads into the stage's pipeline and returns whether what was read
   * still matches the rules in force (null when not).
   */
  async function decide(
    req: PolicyRequest,
    message: Buffer | null,
    opts: LocalOptions,
  ): Promise<EngineDecision | null>;
  /**
   * With only `signal` (the service, for a requester with a deadline): null once it is
   * aborted, as nobody hears the decision; the scanner requests under way end.
   */
  async function decide(
    req: PolicyRequest,
    message: Buffer | null,
    opts: { signal: AbortSignal },
  ): Promise<EngineDecision | null>;
  async function decide(
    req: PolicyRequest,
    message: Buffer | null,
    opts?: Partial<LocalOptions>,
  ): Promise<EngineDecision | null> {
    const ctx: CheckContext = {
      env,
      req,
      message,
      reasons: [],
      headers: [],
      removeHeaders: [],
      bulk: false,
      access: new Map(),
      allowed: new Set(),
      blocked: new Set(),
      listOwners: new Map(),
      spf: null,
      rspamdSymbols: [],
      roundTrips: 0,
      local: !!opts?.local,
      ...(opts?.signal ? { signal: opts.signal } : {}),
    };
    const rules = deps.rules();
    const lists = STAGE_LISTS[req.stage];
    let verdict: Verdict = DUNNO;
    let junkAll = false;
    try {
      // DATA's entries are the heavy ones (mailauth and its lookups): decided here only when
      // every one can be, so that none runs twice when the service has to decide the stage
      // (but for a scanner found unreachable on the way: filterFailed)
      const wholeStage = opts?.local && req.stage === 'data';
      if (wholeStage)
        for (const l of lists) for (const r of rules[l]) if (!(await decidableHere(ctx, r))) return null;
      // the recipients whose own lists are read (every one at DATA), by their owners
      const listed =
        req.stage === 'data'
          ? req.recipients
          : req.recipient && lists.some((l) => rules[l].some((r) => r.name === 'check_user_lists'))
            ? [req.recipient]
            : [];
      await resolveListOwners(ctx, listed);
      let current: (() => boolean) | null = null;
      await prefetch(
        ctx,
        lists.flatMap((l) => rules[l]),
        opts?.current && ((batch) => (current = opts.current!(batch))),
      );
      if (current && !(current as () => boolean)()) return null;
      outer: for (const l of lists) {
        for (const r of rules[l]) {
          // the others are asked as they are reached: the entries before are cheap
          if (opts?.local && !wholeStage && !(await decidableHere(ctx, r))) return null;
          const res = await implementation(r.name).run(ctx, r.value, policyReply);
          // the session gave up waiting: whatever comes next, nobody hears it
          if (opts?.signal?.aborted) return null;
          if (res.kind === 'dunno') continue;
          if (res.kind === 'permit') continue outer;
          if (res.kind === 'hold') {
            junkAll = true;
            continue;
          }
          verdict = res;
          break outer;
        }
      }
    } catch (err) {
      if (err instanceof LeaveToService && opts?.local) return null;
      if (opts?.signal?.aborted) return null;
      logger.error({ sid: req.sessionId, queueId: req.queueId, err }, 'policy check failed');
      note(ctx, 'policy', 'error', String((err as Error).message ?? err));
      verdict = refuse(policyReply.localError());
    }
    const base: Omit<PolicyDecision, 'action' | 'reply'> & { roundTrips: number } = {
      v: POLICY_VERSION,
      reasons: ctx.reasons,
      headers: [],
      removeHeaders: [],
      junk: [],
      bulk: ctx.bulk,
      roundTrips: ctx.roundTrips,
    };
    if (verdict.kind === 'refuse') return { ...base, action: verdict.action, reply: verdict.reply };
    if (verdict.kind === 'discard') return { ...base, action: 'discard', reply: null };
    if (req.stage === 'data') {
      const junk = junkAll ? req.recipients.filter((r) => !ctx.allowed.has(r)) : [];
      // a requester that names no recipients (a Postfix with several) has the whole
      // message held: `junk` empty means every recipient
      const held = junk.length > 0 || (junkAll && !req.recipients.length);
      const summary = ctx.reasons
        .map((r) => `${r.check}=${r.result}${r.detail ? ` (${r.detail.replace(/[\r\n;]/g, ' ')})` : ''}`)
        .join('; ');
      const headers = [
        {
          name: 'X-Mailyard-Policy',
          value: `${held ? 'junk' : 'inbox'}; ${summary || 'no checks fired'}`,
        },
        ...ctx.headers,
      ];
      return {
        ...base,
        action: held ? 'quarantine' : 'continue',
        reply: null,
        headers,
        // our verdict headers and results under our authserv-id: the intake removes them
        // from every message itself, under its AUTHSERV_ID; named here under the policy's,
        // so that results under either go where the two were set apart
        removeHeaders: [...ownHeaderRemovals(env.authservId), ...ctx.removeHeaders],
        junk,
      };
    }
    if (junkAll) {
      return { ...base, action: 'quarantine', reply: null, junk: req.recipient ? [req.recipient] : [] };
    }
    return { ...base, action: 'continue', reply: null };
  }

  return { decide };
}
export type Engine = ReturnType<typeof createEngine>;
