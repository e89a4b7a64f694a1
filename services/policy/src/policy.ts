import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Bus } from '@mailyard/bus';
import {
  EventKeys,
  PolicyRpc,
  type LearnEvent,
  type PolicyDecision,
  type PolicyRequestInput,
} from '@mailyard/contracts';
import type { Directory } from '@mailyard/directory';
import type { MailResolver } from '@mailyard/dns';
import type { Logger, Registry } from '@mailyard/observability';
import { createDecider, createMetrics, engineSettings, rspamdLearn } from '@mailyard/policy-engine';
import { PolicyKeys, PolicyRules, USER_LISTS_CHANGED, type RuleSet } from '@mailyard/policy-rules';
import type { PolicyConfig } from './config.js';
import { startDelegationServer } from './delegation.js';
import { createDnsMonitor } from './dns-monitor.js';

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
  /** For the ready line: the delegation port, when it listens. */
  listening(): Record<string, number>;
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
  const { decide } = createDecider(config, {
    redis,
    directory: deps.directory,
    resolver: deps.resolver,
    logger,
    metrics,
    rules: () => rules!,
    now: deps.now ?? Date.now,
  });
  const dnsMonitor = createDnsMonitor(config, { redis, registry: deps.registry, logger, now: deps.now });
  let sub: Redis | null = null;
  const instance = randomUUID();
  let delegation: { port: number; close(): Promise<void> } | null = null;

  const reload = async (why: string): Promise<void> => {
    try {
      const loaded = await store.load();
      rules = loaded.rules;
      if (loaded.version !== version) {
        // a change of the rules is an event; the first load is part of starting (the ready line)
        const log = why === 'start' ? logger.debug.bind(logger) : logger.info.bind(logger);
        log({ version: loaded.version, why }, 'policy rules loaded');
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
    listening: (): Record<string, number> => (delegation ? { delegation: delegation.port } : {}),
    async start() {
      await reload('start');
      // the settings an intake decides cheap stages with; announced like a rule change
      await redis.hset(PolicyKeys.engineConfig, instance, JSON.stringify(engineSettings(config)));
      await redis.publish(store.channel, 'engine-config');
      // every change to the rules is announced on the channel; reload on each
      sub = redis.duplicate({ keyPrefix: '' });
      // reconnects by itself; the main connection's handler already says Redis is unreachable
      sub.on('error', () => undefined);
      sub.on('message', (_channel: string, what: string) => {
        if (what !== USER_LISTS_CHANGED) void reload('changed');
      });
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
          decide: (req) => decide(req.stage === 'rcpt' ? { ...req, withMail: true } : req),
        });
      }
      dnsMonitor.start();
      // the service's one ready line at info says the delegation port (runtime's runMain)
      logger.debug(
        { delegationPort: delegation?.port ?? null, rulesVersion: version },
        'policy service started',
      );
    },
    async stop() {
      dnsMonitor.stop();
      // intakes stop deciding by these settings, and ask (and get the default action)
      await redis
        .hdel(PolicyKeys.engineConfig, instance)
        .then(() => redis.publish(store.channel, 'engine-config'))
        .catch((err: unknown) => logger.warn({ err }, 'could not withdraw the published settings'));
      await delegation?.close();
      delegation = null;
      await bus.stop();
      sub?.disconnect();
      sub = null;
    },
  };
}
