import { Counter, Histogram, type Registry } from '@mailyard/observability';

export function createMetrics(registry: Registry) {
  return {
    sessions: new Counter({
      name: 'mailyard_mta_inbound_sessions_total',
      help: 'SMTP sessions opened',
      registers: [registry],
    }),
    messages: new Counter({
      name: 'mailyard_mta_inbound_messages_total',
      help: 'Messages and recipients accepted or rejected, by reason',
      labelNames: ['result', 'reason'] as const,
      registers: [registry],
    }),
    bytes: new Counter({
      name: 'mailyard_mta_inbound_received_bytes_total',
      help: 'Bytes of accepted messages',
      registers: [registry],
    }),
    acceptLatency: new Histogram({
      name: 'mailyard_mta_inbound_accept_latency_seconds',
      help: 'From end of DATA to the 250 reply (includes the publisher confirm)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    policyLatency: new Histogram({
      name: 'mailyard_mta_inbound_policy_seconds',
      help: 'Policy RPC round trip by stage and outcome (answered, timeout, error)',
      labelNames: ['stage', 'outcome'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    refusedConnections: new Counter({
      name: 'mailyard_mta_inbound_refused_connections_total',
      help: 'Connections refused with 421 for being over a per-client limit (connection-count, connection-rate)',
      labelNames: ['limit'] as const,
      registers: [registry],
    }),
    timeouts: new Counter({
      name: 'mailyard_mta_inbound_timeouts_total',
      help: 'Sessions ended with 421 because a command line or the message did not arrive in time',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    errorReplies: new Counter({
      name: 'mailyard_mta_inbound_error_replies_total',
      help: 'Error replies sent, by SMTP code',
      labelNames: ['code'] as const,
      registers: [registry],
    }),
  };
}
export type MtaInboundMetrics = ReturnType<typeof createMetrics>;
