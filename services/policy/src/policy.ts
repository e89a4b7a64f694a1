import type { Redis } from 'ioredis';
import type { Bus } from '@mailyard/bus';
import {
  EventKeys,
  POLICY_VERSION,
  PolicyRequest,
  PolicyRpc,
  type LearnEvent,
  type PolicyDecision,
  type PolicyRequestInput,
} from '@mailyard/contracts';
import type { Directory } from '@mailyard/directory';
import type { MailResolver } from '@mailyard/dns';
import type { Logger, Registry } from '@mailyard/observability';
import { PolicyKeys, PolicyRules, type ExplainRecord, type RuleSet } from '@mailyard/policy-rules';
import type { PolicyConfig } from './config.js';
import { startDelegationServer } from './delegation.js';
import { measuredResolver } from './dns-checks.js';
import { createDnsMonitor } from './dns-monitor.js';
import { createEngine } from './engine.js';
import { createMetrics } from './metrics.js';
import { rspamdLearn } from './rspamd.js';

export interface PolicyDeps {
  bus: Bus;
  redis: Redis;
  directory: Directory;
  resolver: MailResolver;
  logger: Logger;
  registry: Registry;
  /** Milliseconds since the epoch (tests pass a controllable clock). */
  now?: () => number;
}

export interface PolicyService {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Decides a request directly (the RPC handler and the delegation server both use this). */
  decide(req: Omit<PolicyRequestInput, 'v'>, message?: Buffer | null): Promise<PolicyDecision>;
  /** The bound policy delegation port, once started (0 when disabled). */
  readonly delegationPort: number;
  /** Rule version currently in force. */
  readonly rulesVersion: number;
}

/**
 * services/policy: answers the stage RPCs of mta-inbound and msa from the restriction
 * lists in Redis, reloads them live on change, keeps refusal reasons for `explain`,
 * speaks the Postfix policy delegation protocol, and trains rspamd from learn events.
 */
export function buildPolicy(config: PolicyConfig, deps: PolicyDeps): PolicyService {
  const { bus, redis, logger } = deps;
  const metrics = createMetrics(deps.registry);
  const store = new PolicyRules(redis, config.redis_prefix);
  let rules: RuleSet | null = null;
  let version = -1;
  const engine = createEngine(config, {
    redis,
    directory: deps.directory,
    resolver: measuredResolver(deps.resolver, metrics),
    logger,
    metrics,
    rules: () => rules!,
    now: deps.now ?? Date.now,
  });
  const dnsMonitor = createDnsMonitor(config, { redis, registry: deps.registry, logger, now: deps.now });
  let sub: Redis | null = null;
  let delegation: { port: number; close(): Promise<void> } | null = null;

  const reload = async (why: string): Promise<void> => {
    try {
      const loaded = await store.load();
      rules = loaded.rules;
      if (loaded.version !== version) {
        logger.info({ version: loaded.version, why }, 'policy rules loaded');
        // written before lists were checked for their stage; they run, and decide nothing
        for (const entry of loaded.misplaced)
          logger.warn({ entry }, 'restriction can decide nothing in its list');
      }
      version = loaded.version;
    } catch (err) {
      // keep the rules in force; a bad entry written behind the CLI's back must not open the gates
      logger.error({ err }, 'could not load policy rules, keeping the previous ones');
      if (!rules) throw err;
    }
  };

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
      at: new Date((deps.now ?? Date.now)()).toISOString(),
    };
    const json = JSON.stringify(rec);
    const ttl = Math.ceil(config.explain_ttl / 1000);
    const p = redis.pipeline().set(PolicyKeys.explain(req.sessionId), json, 'EX', ttl);
    if (req.queueId) p.set(PolicyKeys.explain(req.queueId), json, 'EX', ttl);
    await p.exec();
  };

  const decide = async (
    input: Omit<PolicyRequestInput, 'v'>,
    message: Buffer | null = null,
  ): Promise<PolicyDecision> => {
    const req = PolicyRequest.parse({ ...input, v: POLICY_VERSION });
    const end = metrics.decisionLatency.startTimer({ stage: req.stage });
    const { roundTrips, ...decision } = await engine.decide(req, message);
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

  const onLearn = async (ev: LearnEvent, key: string): Promise<void> => {
    if (!config.rspamd_controller_url) return;
    const kind = key === EventKeys.learnSpam ? 'spam' : 'ham';
    const end = metrics.scannerLatency.startTimer({ scanner: 'rspamd' });
    try {
      await rspamdLearn(
        config.rspamd_controller_url,
        kind,
        Buffer.from(ev.message, 'base64'),
        config.rspamd_password,
        config.content_filter_timeout,
      );
      logger.info({ account: ev.account, queueId: ev.queueId, kind }, 'rspamd trained');
    } catch (err) {
      metrics.scannerErrors.inc({ scanner: 'rspamd' });
      logger.warn({ err, queueId: ev.queueId }, 'rspamd learning failed');
    } finally {
      end();
    }
  };

  return {
    decide,
    get delegationPort() {
      return delegation?.port ?? 0;
    },
    get rulesVersion() {
      return version;
    },
    async start() {
      await reload('start');
      // every change to the rules is announced on the channel; reload on each
      sub = redis.duplicate({ keyPrefix: '' });
      // reconnects by itself; the main connection's handler already says Redis is unreachable
      sub.on('error', () => undefined);
      sub.on('message', () => void reload('changed'));
      sub.on('ready', () => void reload('resubscribed'));
      await sub.subscribe(store.channel);
      // the stage RPC: a request it cannot read is answered 451 4.3.0 by the bus
      await bus.serve(PolicyRpc, (req, body) => decide(req, req.stage === 'data' ? body : null), {
        prefetch: config.policy_prefetch,
      });
      await bus.subscribe(EventKeys.learnSpam, onLearn);
      await bus.subscribe(EventKeys.learnHam, onLearn);
      if (config.policy_delegation_enabled) {
        delegation = await startDelegationServer({
          port: config.policy_delegation_port,
          host: config.listen_address,
          logger,
          // Postfix asks once, usually at RCPT (smtpd_delay_reject): the helo and
          // sender lists run there too, before the relay and recipient lists
          decide: async (req) => {
            if (req.stage !== 'rcpt') return decide(req);
            const first = await decide({ ...req, stage: 'mail' });
            return first.action === 'continue' ? decide(req) : first;
          },
        });
      }
      dnsMonitor.start();
      logger.info(
        { delegationPort: delegation?.port ?? null, rulesVersion: version },
        'policy service started',
      );
    },
    async stop() {
      dnsMonitor.stop();
      await delegation?.close();
      delegation = null;
      await bus.stop();
      sub?.disconnect();
      sub = null;
    },
  };
}
