import { Counter, Histogram, type Registry } from '@mailyard/observability';

export function createMetrics(registry: Registry) {
  return {
    sessions: new Counter({
      name: 'mailyard_msa_sessions_total',
      help: 'Submission sessions opened, by listener (submission = 587 STARTTLS, submissions = 465 implicit TLS)',
      labelNames: ['listener'] as const,
      registers: [registry],
    }),
    logins: new Counter({
      name: 'mailyard_msa_auth_success_total',
      help: 'Successful logins, by credential (password, app-password)',
      labelNames: ['via'] as const,
      registers: [registry],
    }),
    authFailures: new Counter({
      name: 'mailyard_msa_auth_failures_total',
      help: 'Refused logins, by reason (auth_invalid, auth_locked, auth_temp_fail)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    submissions: new Counter({
      name: 'mailyard_msa_submissions_total',
      help: 'Messages accepted (queued and confirmed by the broker)',
      registers: [registry],
    }),
    recipients: new Counter({
      name: 'mailyard_msa_recipients_total',
      help: 'Recipients of accepted messages, by route (delivery = local, outbound = remote)',
      labelNames: ['route'] as const,
      registers: [registry],
    }),
    rejections: new Counter({
      name: 'mailyard_msa_rejections_total',
      help: 'Commands and messages refused, by reason',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    bytes: new Counter({
      name: 'mailyard_msa_received_bytes_total',
      help: 'Bytes of accepted messages (after fix-ups and signing)',
      registers: [registry],
    }),
    dkim: new Counter({
      name: 'mailyard_msa_dkim_signatures_total',
      help: 'DKIM signatures added, by algorithm; algorithm="none" counts messages sent unsigned',
      labelNames: ['algorithm'] as const,
      registers: [registry],
    }),
    acceptLatency: new Histogram({
      name: 'mailyard_msa_accept_latency_seconds',
      help: 'From end of DATA to the 250 reply (fix-ups, signing, publisher confirm)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    policyLatency: new Histogram({
      name: 'mailyard_msa_policy_seconds',
      help: 'Policy RPC round trip by stage and outcome (answered, timeout, error)',
      labelNames: ['stage', 'outcome'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    errorReplies: new Counter({
      name: 'mailyard_msa_error_replies_total',
      help: 'Error replies sent, by SMTP code',
      labelNames: ['code'] as const,
      registers: [registry],
    }),
  };
}
export type MsaMetrics = ReturnType<typeof createMetrics>;
