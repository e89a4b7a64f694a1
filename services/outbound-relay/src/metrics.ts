import { Counter, Gauge, Histogram, type Registry } from '@mailyard/observability';

export function createMetrics(registry: Registry, queueDepth: () => Promise<Map<string, number>>) {
  return {
    attempts: new Counter({
      name: 'mailyard_outbound_relay_attempts_total',
      help: 'Delivery attempts per recipient, by result (delivered, deferred, bounced) and destination domain',
      labelNames: ['result', 'domain'] as const,
      registers: [registry],
    }),
    latency: new Histogram({
      name: 'mailyard_outbound_relay_delivery_latency_seconds',
      help: 'From acceptance (envelope receivedAt) to the remote 250, retries included',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14_400, 86_400],
      registers: [registry],
    }),
    connections: new Counter({
      name: 'mailyard_outbound_relay_deliveries_total',
      help: 'Messages handed to a remote server, by whether the session used TLS (TLS share: tls="yes" / all)',
      labelNames: ['tls'] as const,
      registers: [registry],
    }),
    sessions: new Counter({
      name: 'mailyard_outbound_relay_sessions_total',
      help: 'SMTP sessions used for a delivery, by whether it was a cached one (reused="yes") or newly opened',
      labelNames: ['reused'] as const,
      registers: [registry],
    }),
    tlsHandshakes: new Counter({
      name: 'mailyard_outbound_relay_tls_handshakes_total',
      help: 'STARTTLS handshakes, by whether an earlier TLS session was resumed',
      labelNames: ['resumed'] as const,
      registers: [registry],
    }),
    bounces: new Counter({
      name: 'mailyard_outbound_relay_dsn_total',
      help: 'Delivery status notifications sent, by kind (failure, delay)',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    queueDepth: new Gauge({
      name: 'mailyard_outbound_relay_queue_depth_messages',
      help: 'Messages ready in `outbound` and each delay queue of the retry schedule (read at scrape time)',
      labelNames: ['queue'] as const,
      registers: [registry],
      async collect() {
        try {
          const depths = await queueDepth();
          for (const [queue, n] of depths) this.set({ queue }, n);
        } catch {
          // broker unreachable: keep the last values; /readyz reports the outage
        }
      },
    }),
  };
}
export type OutboundMetrics = ReturnType<typeof createMetrics>;
