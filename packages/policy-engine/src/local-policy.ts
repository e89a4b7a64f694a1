import type { Redis } from 'ioredis';
import type { PolicyDecision } from '@mailyard/contracts';
import type { Directory } from '@mailyard/directory';
import type { MailResolver } from '@mailyard/dns';
import type { Logger, Registry } from '@mailyard/observability';
import { PolicyKeys, PolicyRules } from '@mailyard/policy-rules';
import { parseEngineSettings } from './config.js';
import { createDecider, type Decider, type PolicyInput } from './decider.js';
import type { RedisBatch } from './check-context.js';
import { createMetrics } from './metrics.js';

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
}

/**
 * The cheap stages of the policy decided where the SMTP session runs (Postfix decides
 * its restriction lists inside smtpd): the rule lists and the policy service's check
 * settings are loaded from Redis and reloaded on every announced change; access tables
 * and user lists are read in the stage's one pipeline, DNS through the process's cache.
 * A stage that reaches a check needing shared state or heavy work (greylisting, rate
 * counters, DNS lists, scanners) is left to the policy service: `decide` answers null.
 * Until the service has published its settings, every stage is left to it.
 */
export class LocalPolicy {
  private decider: Decider | null = null;
  private rules: Awaited<ReturnType<PolicyRules['load']>>['rules'] | null = null;
  private settings = '';
  /** policy:version of the rules in force here. */
  private version: number | null = null;
  private sub: Redis | null = null;
  private readonly store: PolicyRules;
  private readonly metrics: ReturnType<typeof createMetrics>;
  private readonly log: Logger;
  /** Reloads run one after the other, so the last one started is the one in force. */
  private reloading: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(private readonly deps: LocalPolicyDeps) {
    this.store = new PolicyRules(deps.redis, deps.prefix);
    this.metrics = createMetrics(deps.registry, `mailyard_${deps.service.replace(/-/g, '_')}_local_policy`);
    this.log = deps.logger.child({ component: 'local-policy' });
  }

  /** Whether rules and settings are loaded (stages can be decided here). */
  get ready(): boolean {
    return this.decider !== null;
  }

  /** Loads rules and settings, then follows the change channel. Never throws: without them, the service decides. */
  async start(): Promise<void> {
    this.stopped = false;
    const sub = this.deps.redis.duplicate({ keyPrefix: '' });
    this.sub = sub;
    sub.on('error', () => undefined);
    sub.on('message', () => void this.reload());
    sub.on('ready', () => void this.reload());
    await sub.subscribe(this.store.channel).catch((err: unknown) => {
      this.log.warn({ err }, 'cannot follow policy changes; the policy service decides every stage');
    });
    await this.reload();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.sub?.disconnect();
    this.sub = null;
    this.decider = null;
  }

  /** Reloads rules and the service's settings; on failure keeps what is in force. */
  reload(): Promise<void> {
    this.reloading = this.reloading.then(() => this.load());
    return this.reloading;
  }

  private async load(): Promise<void> {
    if (this.stopped) return;
    try {
      const [loaded, settings] = await Promise.all([this.store.load(), this.published()]);
      if (this.stopped) return;
      this.rules = loaded.rules;
      this.version = loaded.version;
      if (!settings) {
        this.decider = null;
        this.settings = '';
        return;
      }
      if (settings !== this.settings || !this.decider) {
        const config = parseEngineSettings(settings);
        const rules = () => this.rules!;
        this.decider = createDecider(config, { ...this.deps, metrics: this.metrics, rules, now: Date.now });
        this.settings = settings;
      }
    } catch (err) {
      // the rules in force stay; none yet: the service decides
      this.log.warn({ err }, 'could not load the policy rules, keeping the previous ones');
    }
  }

  /** The decision of a connect, MAIL or RCPT request; null: ask the policy service. */
  async decide(input: PolicyInput): Promise<PolicyDecision | null> {
    if (!this.decider || input.stage === 'data') return null;
    // a change announced but not yet received here must not be decided with the old
    // rules, nor a stage decided here once the service is gone (it would give the default
    // action): both are read with each decision, in the stage's one pipeline; when they
    // differ, reload and try once more
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
      const d = await this.decider.decideHere(input, current);
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
