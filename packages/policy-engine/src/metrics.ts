import { Counter, Histogram, type Registry } from '@mailyard/observability';

/** The checks' metrics, `<prefix>_*` (mailyard_policy in the service, mailyard_<svc>_local_policy in an intake). */
export function createMetrics(registry: Registry, prefix = 'mailyard_policy') {
  return {
    decisions: new Counter({
      name: `${prefix}_decisions_total`,
      help: 'Decisions by stage and action',
      labelNames: ['stage', 'action'] as const,
      registers: [registry],
    }),
    checks: new Counter({
      name: `${prefix}_check_results_total`,
      help: 'Results of individual checks (permit, reject, defer, pass, fail...)',
      labelNames: ['check', 'result'] as const,
      registers: [registry],
    }),
    decisionLatency: new Histogram({
      name: `${prefix}_decision_seconds`,
      help: 'Time to decide one request, by stage',
      labelNames: ['stage'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    redisRoundTrips: new Counter({
      name: `${prefix}_redis_round_trips_total`,
      help: 'Redis round trips (pipelines count once), by stage',
      labelNames: ['stage'] as const,
      registers: [registry],
    }),
    dnsLatency: new Histogram({
      name: `${prefix}_dns_lookup_seconds`,
      help: 'DNS lookups made by checks, by record type',
      labelNames: ['type'] as const,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    dnsFailures: new Counter({
      name: `${prefix}_dns_failures_total`,
      help: 'DNS lookups that failed temporarily (timeout, SERVFAIL, garbage)',
      labelNames: ['type'] as const,
      registers: [registry],
    }),
    scannerLatency: new Histogram({
      name: `${prefix}_scanner_seconds`,
      help: 'rspamd and clamd request time',
      labelNames: ['scanner'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    scannerErrors: new Counter({
      name: `${prefix}_scanner_errors_total`,
      help: 'rspamd and clamd failures (down, timeout, bad answer)',
      labelNames: ['scanner'] as const,
      registers: [registry],
    }),
  };
}
export type PolicyMetrics = ReturnType<typeof createMetrics>;
