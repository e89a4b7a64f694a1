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
import {
  AccessTables,
  UserListCopy,
  createDecider,
  createMetrics,
  engineSettings,
  rspamdLearn,
  tablesOf,
} from '@mailyard/policy-engine';
import { PolicyKeys, PolicyRules, USER_LISTS_CHANGED, type RuleSet } from '@mailyard/policy-rules';
import type { PolicyConfig } from './config.js';
import { startDelegationServer } from './delegation.js';
import { createDnsMonitor } from './dns-monitor.js';

/**
 * Runs when Redis is at its maxmemory (allow-oom): one field of a kilobyte per running
 * instance, taken back by stop(). Refused, an instance restarted while Redis is full
 * would not start, and without a policy service the intakes defer every message.
 */
const PUBLISH_SETTINGS = `#!lua flags=allow-oom
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1`;

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
  /**
   * What the lists read from Redis, kept as an intake keeps them (LocalPolicy): the access
   * tables they name, loaded with the rules, and recipients' allow and block lists, read
   * whole on first use and dropped on every announcement. So a decision reads Redis only
   * for shared state (greylisting, rate counters). They are used only while the change
   * channel is subscribed and they were loaded since (`following`); otherwise every
   * decision reads what it needs, so a change is never missed.
   */
  let tables: AccessTables | null = null;
  const userLists = new UserListCopy();
  let following = false;
  /** Bumped whenever the channel's connection closes, and the one it is subscribed on. */
  let connection = 0;
  let subscribed: number | null = null;
  const { decide } = createDecider(config, {
    redis,
    directory: deps.directory,
    resolver: deps.resolver,
    logger,
    metrics,
    rules: () => rules!,
    accessTables: () => (following ? tables : null),
    userLists: () => (following ? userLists : null),
    now: deps.now ?? Date.now,
  });
  const dnsMonitor = createDnsMonitor(config, { redis, registry: deps.registry, logger, now: deps.now });
  let sub: Redis | null = null;
  const instance = randomUUID();
  let delegation: { port: number; close(): Promise<void> } | null = null;

  const load = async (why: string): Promise<void> => {
    // a load begun before the channel was subscribed may have missed a change
    const on = subscribed;
    try {
      const loaded = await store.load();
      const loadedTables = await AccessTables.load(redis, tablesOf(loaded.rules));
      rules = loaded.rules;
      tables = loadedTables;
      following = on !== null && on === subscribed;
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
      following = false;
      if (!rules) throw err;
    }
  };
  /** The channel is gone (announcements may be missed): the copies no longer answer. */
  const unfollow = (): void => {
    connection++;
    subscribed = null;
    following = false;
    userLists.clear();
  };
  /** Loads run one after the other, so the last one started is the one in force. */
  let reloading: Promise<void> = Promise.resolve();
  const reload = (why: string): Promise<void> => {
    reloading = reloading.catch(() => undefined).then(() => load(why));
    return reloading;
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
      await redis.eval(
        PUBLISH_SETTINGS,
        1,
        PolicyKeys.engineConfig,
        instance,
        JSON.stringify(engineSettings(config)),
      );
      await redis.publish(store.channel, 'engine-config');
      // every change to the rules is announced on the channel; reload on each
      // subscribed by hand on every connect, then loaded again: announcements missed
      // while the channel was down are caught up by that load
      const channel = redis.duplicate({ keyPrefix: '', autoResubscribe: false });
      sub = channel;
      // reconnects by itself; the main connection's handler already says Redis is unreachable
      channel.on('error', () => undefined);
      channel.on('message', (_channel: string, what: string) => {
        userLists.clear();
        if (what !== USER_LISTS_CHANGED) void reload('changed').catch(() => undefined);
      });
      channel.on('close', unfollow);
      const follow = async (why: string) => {
        const on = connection;
        await channel.subscribe(store.channel);
        if (on !== connection) return;
        subscribed = on;
        userLists.clear();
        await reload(why);
      };
      channel.on('ready', () => {
        follow('resubscribed').catch((err: unknown) =>
          logger.warn({ err }, 'cannot follow policy changes; every decision reads Redis'),
        );
      });
      await follow('subscribed');
      // the stage RPC: a request it cannot read is answered 451 4.3.0 by the bus
      await bus.serve(
        PolicyRpc,
        (req, body, signal) => decide(req, req.stage === 'data' ? body : null, signal),
        {
          prefetch: config.policy_prefetch,
        },
      );
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
      unfollow();
    },
  };
}
