import {
  POLICY_VERSION,
  PolicyRequest,
  type PolicyDecision,
  type PolicyRequestInput,
} from '@mailyard/contracts';
import { PolicyKeys, type ExplainRecord } from '@mailyard/policy-rules';
import type { PolicyEngineConfig } from './config.js';
import { measuredResolver } from './dns-checks.js';
import { createEngine, type EngineDecision, type EngineDeps, type LocalOptions } from './engine.js';

/** The same as the engine's: the decider wraps one. */
export type DeciderDeps = EngineDeps;

export type PolicyInput = Omit<PolicyRequestInput, 'v'>;

/**
 * One decision as the policy service gives it, wherever it is made: the engine's
 * verdict, the reference every refusal names, the metrics, the log line, and the
 * reasons kept for `mailyard policy explain`. The policy service and an intake
 * deciding cheap stages itself share this, so a verdict reads the same from both.
 */
export function createDecider(config: PolicyEngineConfig, deps: DeciderDeps) {
  const { redis, logger, metrics } = deps;
  const engine = createEngine(config, { ...deps, resolver: measuredResolver(deps.resolver, metrics) });

  const explain = async (req: PolicyRequest, d: PolicyDecision): Promise<void> => {
    if (d.action === 'continue' || d.action === 'accept') return;
    const rec: ExplainRecord = {
      id: req.queueId ?? req.sessionId,
      stage: req.stage,
      action: d.action,
      reply: d.reply ? `${d.reply.code} ${d.reply.enhanced} ${d.reply.text}` : null,
      client: req.client.ip,
      sender: req.sender,
      recipient: req.recipient,
      reasons: d.reasons,
      at: new Date(deps.now()).toISOString(),
    };
    const json = JSON.stringify(rec);
    const ttl = Math.ceil(config.explain_ttl / 1000);
    const p = redis.pipeline().set(PolicyKeys.explain(req.sessionId), json, 'EX', ttl);
    if (req.queueId) p.set(PolicyKeys.explain(req.queueId), json, 'EX', ttl);
    await p.exec();
  };

  const finish = async (req: PolicyRequest, decided: EngineDecision, end: () => void) => {
    const { roundTrips, ...decision } = decided;
    end();
    // every refusal names what `mailyard policy explain` and the log know it by
    if (decision.reply) decision.reply.text += ` (ref ${req.queueId ?? req.sessionId})`;
    metrics.decisions.inc({ stage: req.stage, action: decision.action });
    metrics.redisRoundTrips.inc({ stage: req.stage }, roundTrips);
    const log = decision.action === 'continue' ? logger.debug.bind(logger) : logger.info.bind(logger);
    log(
      {
        sid: req.sessionId,
        queueId: req.queueId,
        stage: req.stage,
        client: req.client.ip,
        from: req.sender,
        rcpt: req.recipient,
        action: decision.action,
        reply: decision.reply
          ? `${decision.reply.code} ${decision.reply.enhanced} ${decision.reply.text}`
          : undefined,
        reasons: decision.reasons.map((r) => `${r.check}=${r.result}`),
      },
      'policy decision',
    );
    await explain(req, decision).catch((err: unknown) =>
      logger.warn({ err }, 'could not store the explanation'),
    );
    return decision;
  };

  /**
   * Decides a request (the RPC handler and the delegation server both use this). Once
   * `signal` is aborted (the requester's deadline passed) it rejects with its reason, and
   * the decision is neither logged nor kept for `policy explain`: the intake answered
   * with its own default action, and logged that.
   */
  async function decide(
    input: PolicyInput,
    message: Buffer | null = null,
    signal?: AbortSignal,
  ): Promise<PolicyDecision> {
    const req = PolicyRequest.parse({ ...input, v: POLICY_VERSION });
    if (req.withMail && req.stage === 'rcpt') return decideWithMail(req, signal);
    const end = metrics.decisionLatency.startTimer({ stage: req.stage });
    const decided = signal
      ? await engine.decide(req, message, { signal })
      : await engine.decide(req, message);
    if (!decided || signal?.aborted) throw signal?.reason ?? new Error('decision abandoned');
    return finish(req, decided, end);
  }

  /**
   * A RCPT that carries the MAIL stage left to it (smtpd_delay_reject): the helo and
   * sender lists first, each stage decided, logged and explained as on its own; a
   * refusal of theirs answers the RCPT, and their Junk verdict covers the transaction.
   */
  async function decideWithMail(req: PolicyRequest, signal?: AbortSignal): Promise<PolicyDecision> {
    const mail = await decide({ ...req, stage: 'mail', recipient: null, withMail: false }, null, signal);
    if (mail.action !== 'continue' && mail.action !== 'quarantine') return mail;
    const rcpt = await decide({ ...req, withMail: false }, null, signal);
    const joined = {
      ...rcpt,
      reasons: [...mail.reasons, ...rcpt.reasons],
      bulk: mail.bulk || rcpt.bulk,
      mailPassed: mail.action,
    };
    // no recipient named: the intake holds the whole transaction for Junk
    if (mail.action === 'quarantine' && (rcpt.action === 'continue' || rcpt.action === 'quarantine'))
      return { ...joined, action: 'quarantine', junk: [] };
    return joined;
  }

  /**
   * As decide, or null when an entry reached needs the policy service (see Engine.decide).
   * Once `signal` is aborted (the session gave up waiting) a decision is dropped: not
   * logged, counted or kept for `policy explain`, as the client never heard it.
   */
  async function decideHere(
    input: PolicyInput,
    message: Buffer | null,
    current?: LocalOptions['current'],
    signal?: AbortSignal,
  ): Promise<PolicyDecision | null> {
    const req = PolicyRequest.parse({ ...input, v: POLICY_VERSION });
    const end = metrics.decisionLatency.startTimer({ stage: req.stage });
    const decided = await engine.decide(req, message, {
      local: true,
      ...(current ? { current } : {}),
      ...(signal ? { signal } : {}),
    });
    return decided && !signal?.aborted ? finish(req, decided, end) : null;
  }

  return { decide, decideHere };
}
export type Decider = ReturnType<typeof createDecider>;
