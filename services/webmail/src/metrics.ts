import { Counter, Gauge, Histogram, type Registry } from '@mailyard/observability';

export type WebmailMetrics = ReturnType<typeof createMetrics>;

export function createMetrics(registry: Registry) {
  return {
    logins: new Counter({
      name: 'mailyard_webmail_logins_total',
      help: 'Login attempts by result (ok, invalid, locked, rate_limited, second_factor)',
      labelNames: ['result'],
      registers: [registry],
    }),
    requests: new Histogram({
      name: 'mailyard_webmail_request_seconds',
      help: 'API request time by route and status class',
      labelNames: ['route', 'status'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers: [registry],
    }),
    imapConnections: new Gauge({
      name: 'mailyard_webmail_imap_connections',
      help: 'IMAP connections open (pool and notifier)',
      registers: [registry],
    }),
    imapConnects: new Counter({
      name: 'mailyard_webmail_imap_connects_total',
      help: 'IMAP logins through the service login, by result',
      labelNames: ['result'],
      registers: [registry],
    }),
    imapConnectSeconds: new Histogram({
      name: 'mailyard_webmail_imap_connect_seconds',
      help: 'Time to open an IMAP session (TLS, login)',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    eventStreams: new Gauge({
      name: 'mailyard_webmail_event_streams',
      help: 'Open event streams (new mail pushed to browsers)',
      registers: [registry],
    }),
    sent: new Counter({
      name: 'mailyard_webmail_messages_sent_total',
      help: 'Messages sent, by result (ok, refused, failed)',
      labelNames: ['result'],
      registers: [registry],
    }),
    remoteContentBlocked: new Counter({
      name: 'mailyard_webmail_remote_content_blocked_total',
      help: 'Remote images and other remote resources blocked in displayed HTML mail',
      registers: [registry],
    }),
    auditFailures: new Counter({
      name: 'mailyard_webmail_audit_failures_total',
      help: 'Admin console changes made whose audit log entry could not be written',
      registers: [registry],
    }),
    connectionsRefused: new Counter({
      name: 'mailyard_webmail_connections_refused_total',
      help: 'HTTPS connections refused: over the limit of their client address (client) or of the server (total)',
      labelNames: ['limit'],
      registers: [registry],
    }),
    challengeConnectionsRefused: new Counter({
      name: 'mailyard_webmail_http_connections_refused_total',
      help: 'Connections to the HTTP port (ACME challenges, redirects to HTTPS) refused: over the limit of their client address (client) or of the port (total)',
      labelNames: ['limit'],
      registers: [registry],
    }),
    trackersRemoved: new Counter({
      name: 'mailyard_webmail_trackers_removed_total',
      help: 'Tracking pixels removed from displayed HTML mail',
      registers: [registry],
    }),
  };
}
