import type { Redis } from 'ioredis';
import {
  Operations,
  dnsCheckerFromConfig,
  type CheckStatus,
  type DnsChecker,
  type DomainReport,
  type ServerReport,
} from '@mailyard/admin';
import { Counter, Gauge, type Logger, type Registry } from '@mailyard/observability';
import type { PolicyConfig } from './config.js';

export interface DnsMonitorDeps {
  redis: Redis;
  registry: Registry;
  logger: Logger;
  /** The checks (default: from the config, on a resolver without cache). */
  checker?: DnsChecker;
  now?: () => number;
  random?: () => number;
}

export interface DnsMonitor {
  start(): void;
  stop(): void;
  /** One run of every check, metrics updated (the scheduler calls it; tests may too). */
  runOnce(): Promise<void>;
}

function createDnsMetrics(registry: Registry) {
  return {
    ok: new Gauge({
      name: 'mailyard_policy_dns_check_ok',
      help: 'DNS check of a local domain record kind (mx, spf, dkim, dmarc, mta-sts, tls-rpt, srv) or of MYHOSTNAME (record fcrdns): 1 right, 0 wrong or missing; kept while the resolver fails',
      labelNames: ['domain', 'record'] as const,
      registers: [registry],
    }),
    listed: new Gauge({
      name: 'mailyard_policy_dnsbl_listed',
      help: 'A sending address is on this DNS blocklist (the policy rules’ reject_rbl_client zones): 1 listed, 0 not',
      labelNames: ['list'] as const,
      registers: [registry],
    }),
    certExpiry: new Gauge({
      name: 'mailyard_policy_tls_cert_expiry_seconds',
      help: 'Seconds until TLS_CERT_FILE expires (negative once expired); absent without a certificate file',
      // a label, so that no series exists before the first check: an unlabelled gauge starts at 0, "expired"
      labelNames: ['file'] as const,
      registers: [registry],
    }),
    lastRun: new Gauge({
      name: 'mailyard_policy_dns_check_last_run_timestamp_seconds',
      help: 'When the DNS and deliverability checks last completed (Unix time)',
      registers: [registry],
    }),
    duration: new Gauge({
      name: 'mailyard_policy_dns_check_duration_seconds',
      help: 'How long the last run of the DNS and deliverability checks took',
      registers: [registry],
    }),
    unchecked: new Counter({
      name: 'mailyard_policy_dns_check_unchecked_total',
      help: 'Checks that could not be made (resolver failures, Redis unavailable)',
      registers: [registry],
    }),
  };
}

/** 1, 0, or null (nothing decided: only unchecked) for a set of statuses. */
function okOf(statuses: CheckStatus[]): 0 | 1 | null {
  if (statuses.some((s) => s === 'wrong' || s === 'missing')) return 0;
  if (statuses.length && statuses.every((s) => s === 'ok')) return 1;
  return null;
}

/**
 * The DNS and deliverability checks run every DNS_CHECK_INTERVAL (with up to a tenth of
 * it at random, so instances and restarts spread out), exported as the metrics the alert
 * rules of deploy/prometheus page on. Labels stay bounded: the configured domains, seven
 * record kinds, the configured blocklists; a domain removed loses its series.
 */
export function createDnsMonitor(config: PolicyConfig, deps: DnsMonitorDeps): DnsMonitor {
  const { logger } = deps;
  const now = deps.now ?? Date.now;
  const random = deps.random ?? Math.random;
  const metrics = createDnsMetrics(deps.registry);
  const checker = deps.checker ?? dnsCheckerFromConfig(config, { now });
  const ops = new Operations(deps.redis, 'policy');
  let series = new Set<string>();
  let listSeries = new Set<string>();
  let timer: NodeJS.Timeout | null = null;
  let stopped = true;

  const recordDomain = (r: DomainReport, seen: Set<string>) => {
    const byKind = new Map<string, CheckStatus[]>();
    for (const x of r.records) byKind.set(x.kind, [...(byKind.get(x.kind) ?? []), x.status]);
    for (const [record, statuses] of byKind) {
      const key = JSON.stringify([r.domain, record]);
      seen.add(key);
      const v = okOf(statuses);
      if (v !== null) metrics.ok.set({ domain: r.domain, record }, v);
      if (statuses.includes('unchecked')) metrics.unchecked.inc();
    }
  };

  const recordServer = (r: ServerReport, seen: Set<string>) => {
    seen.add(JSON.stringify([r.hostname, 'fcrdns']));
    const statuses = r.addresses.map((a) => a.status);
    const v = r.detail && !r.detail.startsWith('could not') ? 0 : okOf(statuses);
    if (v !== null) metrics.ok.set({ domain: r.hostname, record: 'fcrdns' }, v);
    const lists = new Map<string, { listed: boolean; unchecked: boolean }>();
    for (const l of r.dnsbl) {
      const v = lists.get(l.list) ?? { listed: false, unchecked: false };
      lists.set(l.list, { listed: v.listed || l.listed, unchecked: v.unchecked || !l.checked });
      if (!l.checked) metrics.unchecked.inc();
    }
    for (const list of listSeries) if (!lists.has(list)) metrics.listed.remove({ list });
    listSeries = new Set(lists.keys());
    for (const [list, v] of lists)
      if (v.listed || !v.unchecked) metrics.listed.set({ list }, v.listed ? 1 : 0);
    metrics.certExpiry.reset();
    if (r.tls.notAfter && config.tls_cert_file)
      metrics.certExpiry.set({ file: config.tls_cert_file }, (Date.parse(r.tls.notAfter) - now()) / 1000);
  };

  const runOnce = async () => {
    const started = now();
    const seen = new Set<string>();
    try {
      for (const d of await ops.listDomains()) recordDomain(await ops.checkDomainDns(d, checker), seen);
      recordServer(await ops.checkServerDns(checker), seen);
    } catch (err) {
      // Redis unavailable: nothing is known, nothing changes
      metrics.unchecked.inc();
      logger.warn({ err }, 'DNS checks could not run');
      return;
    }
    for (const key of series)
      if (!seen.has(key)) {
        const [domain, record] = JSON.parse(key) as [string, string];
        metrics.ok.remove({ domain, record });
      }
    series = seen;
    metrics.lastRun.set(now() / 1000);
    metrics.duration.set((now() - started) / 1000);
    logger.debug({ ms: now() - started }, 'DNS checks done');
  };

  const schedule = (base: number) => {
    if (stopped) return;
    const delay = base + random() * (config.dns_check_interval / 10);
    timer = setTimeout(() => {
      void runOnce().finally(() => schedule(config.dns_check_interval));
    }, delay);
    timer.unref();
  };

  return {
    runOnce,
    start() {
      if (config.dns_check_interval <= 0 || !stopped) return;
      stopped = false;
      schedule(0);
    },
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = null;
    },
  };
}
