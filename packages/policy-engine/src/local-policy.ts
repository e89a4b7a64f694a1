import type { Redis } from 'ioredis';
import type { PolicyDecision } from '@mailyard/contracts';
import type { Directory } from '@mailyard/directory';
import type { MailResolver } from '@mailyard/dns';
import { Gauge, type Logger, type Registry } from '@mailyard/observability';
import { PolicyKeys, PolicyRules, USER_LISTS_CHANGED } from '@mailyard/policy-rules';
import { AccessTables, tablesOf } from './access-copy.js';
import { parseEngineSettings } from './config.js';
import { createDecider, type Decider, type PolicyInput } from './decider.js';
import type { RedisBatch } from './check-context.js';
import { createMetrics } from './metrics.js';
import { UserListCopy } from './user-list-copy.js';

export interface LocalPolicyDeps {
  redis: Redis;
  /** The Redis key prefix (channels are not prefixed by ioredis). */
  prefix: string;
  directory: Directory;
  resolver: MailResolver;
  logger: Logger;
  registry: Registry;
  /** `mailyard_<service>_local_policy_*` metrics. */
  service: string;
  /** Milliseconds since the epoch (greylisting); tests pass a controllable clock. */
  now?: () => number;
}

/**
 * The cheap stages of the policy decided where the SMTP session runs (Postfix decides
 * its restriction lists inside smtpd): the rule lists, the access tables they name and
 * the policy service's check settings are loaded from Redis and again on every change
 * announced on the rules' channel; a recipient's user lists are read whole in the
 * stage's one pipeline the first time and kept until the next announcement; DNS goes
 * through the process's cache. A stage that reaches a check needing shared state or
 * heavy work (greylisting, rate counters, DNS lists) is left to the policy
 * service: `decide` answers null. Until the service has published its settings, every
 * stage is left to it.
 *
 * The copy decides alone only while the change channel is subscribed and the last load
 * after subscribing succeeded (`following`), so a change made in Redis is in force here
 * once its announcement arrives, as Postfix's maps are after `postfix reload`. Otherwise
 * (the channel lost, Redis unreachable) every stage reads the version, the settings and
 * its tables from Redis again, and fails with Redis: an outage is a temporary failure.
 */
export class LocalPolicy {
  private decider: Decider | null = null;
  private rules: Awaited<ReturnType<PolicyRules['load']>>['rules'] | null = null;
  private tables: AccessTables | null = null;
  private readonly userLists = new UserListCopy();
  private settings = '';
  /** The published settings say the service takes withMail. */
  private withRcpt = false;
  /** policy:version of the rules in force here. */
  private version: number | null = null;
  /** Subscribed to the change channel, and loaded since: the copy is current. */
  private following = false;
  /** Bumped whenever the channel's connection closes: a load begun before is not current. */
  private connection = 0;
  private sub: Redis | null = null;
  private readonly store: PolicyRules;
  private readonly metrics: ReturnType<typeof createMetrics>;
  private readonly versionGauge: Gauge;
  private readonly log: Logger;
  /** Reloads run one after the other, so the last one started is the one in force. */
  private reloading: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(private readonly deps: LocalPolicyDeps) {
    this.store = new PolicyRules(deps.redis, deps.prefix);
    const prefix = `mailyard_${deps.service.replace(/-/g, '_')}_local_policy`;
    this.metrics = createMetrics(deps.registry, prefix);
    this.versionGauge = new Gauge({
      name: `${prefix}_rules_version`,
      help: 'Version of the policy rules this process decides with on its own (-1: none, every stage is read from Redis or asked of the policy service)',
      registers: [deps.registry],
    });
    this.versionGauge.set(-1);
    this.log = deps.logger.child({ component: 'local-policy' });
  }

  /** Whether rules and settings are loaded (stages can be decided here). */
  get ready(): boolean {
    return this.decider !== null;
  }

  /** Whether the policy service decides a RCPT carrying its MAIL stage (PolicyRequest.withMail). */
  get takesMailWithRcpt(): boolean {
    return this.decider !== null && this.withRcpt;
  }

  /** The version of the rules this process decides with alone; null when it reads Redis at every stage. */
  get rulesVersion(): number | null {
    return this.following && this.decider ? this.version : null;
  }

  /** Loads rules and settings, then follows the change channel. Never throws: without them, the service decides. */
  async start(): Promise<void> {
    this.stopped = false;
    // resubscribed by hand on every connect, then loaded again: announcements missed
    // while the channel was down are caught up by that load
    const sub = this.deps.redis.duplicate({ keyPrefix: '', lazyConnect: false, autoResubscribe: false });
    this.sub = sub;
    sub.on('error', () => undefined);
    // every announcement drops the user lists; one of theirs needs no reload of the rules
    sub.on('message', (_channel: string, what: string) => {
      this.userLists.clear();
      if (what !== USER_LISTS_CHANGED) void this.reload();
    });
    sub.on('close', () => this.unfollow());
    const follow = () => {
      const connection = this.connection;
      return sub.subscribe(this.store.channel).then(
        () => this.reload(connection),
        (err: unknown) => {
          this.log.warn({ err }, 'cannot follow policy changes; every stage reads Redis');
        },
      );
    };
    sub.on('ready', () => void follow());
    // decided with reads of Redis at every stage until the channel is subscribed
    await this.reload();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.sub?.disconnect();
    this.sub = null;
    this.decider = null;
    this.unfollow();
  }

  private unfollow(): void {
    this.connection++;
    this.following = false;
    this.userLists.clear();
    this.versionGauge.set(-1);
  }

  /**
   * Reloads rules, tables and the service's settings; on failure keeps what is in force.
   * `subscribedOn`: the channel was subscribed on that connection of it just before, so
   * the copy is current once this load succeeds, unless the connection closed meanwhile.
   */
  reload(subscribedOn?: number): Promise<void> {
    this.reloading = this.reloading.then(() => this.load(subscribedOn));
    return this.reloading;
  }

  private async load(subscribedOn: number | undefined): Promise<void> {
    if (this.stopped) return;
    try {
      const [loaded, settings] = await Promise.all([this.store.load(), this.published()]);
      const tables = await AccessTables.load(this.deps.redis, tablesOf(loaded.rules));
      if (this.stopped) return;
      this.rules = loaded.rules;
      this.tables = tables;
      this.version = loaded.version;
      if (subscribedOn === this.connection) {
        // announcements may have been missed before the channel was subscribed
        this.userLists.clear();
        this.following = true;
      }
      if (!settings) {
        this.decider = null;
        this.settings = '';
      } else if (settings !== this.settings || !this.decider) {
        const { config, mailWithRcpt } = parseEngineSettings(settings);
        this.withRcpt = mailWithRcpt;
        this.decider = createDecider(config, {
          ...this.deps,
          metrics: this.metrics,
          rules: () => this.rules!,
          accessTables: () => (this.following ? this.tables : null),
          userLists: () => (this.following ? this.userLists : null),
          now: this.deps.now ?? Date.now,
        });
        this.settings = settings;
      }
      this.versionGauge.set(this.rulesVersion ?? -1);
    } catch (err) {
      // the rules in force stay; none yet: the service decides
      this.log.warn({ err }, 'could not load the policy rules, keeping the previous ones');
    }
  }

  /**
   * The decision of a request; null: ask the policy service. `message`: the message, at
   * DATA (without it the stage is left to the service); `signal`: aborted when the session
   * stops waiting, after which the decision is dropped (Decider.decideHere).
   */
  async decide(
    input: PolicyInput,
    message: Buffer | null = null,
    signal?: AbortSignal,
  ): Promise<PolicyDecision | null> {
    // a RCPT carrying MAIL: the lists MAIL left need the service
    if (!this.decider || (input.stage === 'data' && !message) || input.withMail) return null;
    // following the channel, the copy is current: no read of the version or settings
    if (this.following) return this.decider.decideHere(input, message, undefined, signal);
    // otherwise a change announced but not received here must not be decided with the
    // old rules, nor a stage decided here once the service is gone (it would give the
    // default action): both are read with each decision, in the stage's one pipeline;
    // when they differ, reload and try once more
    for (let attempt = 0; attempt < 2; attempt++) {
      let version: number | null = null;
      let settings: string | null = null;
      const current = (batch: RedisBatch) => {
        batch.read(
          'local:version',
          (p) => p.get(PolicyKeys.version),
          (v) => (version = Number(v ?? 0)),
        );
        batch.read(
          'local:settings',
          (p) => p.hgetall(PolicyKeys.engineConfig),
          (v) => (settings = firstSettings(v as Record<string, string>)),
        );
        return () => version === this.version && settings !== null && settings === this.settings;
      };
      const d = await this.decider.decideHere(input, message, current, signal);
      if (signal?.aborted) return null;
      if (d) return d;
      if (settings === null) return null;
      if (version === this.version && settings === this.settings) return null; // needs the service
      await this.reload();
      if (!this.decider) return null;
    }
    return null;
  }

  /** The settings a running policy service published, or null. */
  private async published(): Promise<string | null> {
    return firstSettings(await this.deps.redis.hgetall(PolicyKeys.engineConfig));
  }
}

/** Every instance publishes the same settings (one deployment): the first by instance id. */
function firstSettings(all: Record<string, string>): string | null {
  const ids = Object.keys(all).sort();
  return ids.length ? all[ids[0]!]! : null;
}
