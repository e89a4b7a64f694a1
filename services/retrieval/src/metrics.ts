import { Counter, Gauge, Histogram, type Registry } from '@mailyard/observability';

export function createMetrics(registry: Registry) {
  return {
    sessions: new Counter({
      name: 'mailyard_retrieval_sessions_total',
      help: 'Sessions opened, by protocol',
      labelNames: ['protocol'] as const,
      registers: [registry],
    }),
    activeSessions: new Gauge({
      name: 'mailyard_retrieval_active_sessions',
      help: 'Sessions open now, by protocol',
      labelNames: ['protocol'] as const,
      registers: [registry],
    }),
    logins: new Counter({
      name: 'mailyard_retrieval_logins_total',
      help: 'Login attempts, by protocol and result (ok, invalid, locked, refused)',
      labelNames: ['protocol', 'result'] as const,
      registers: [registry],
    }),
    loginCacheHits: new Counter({
      name: 'mailyard_retrieval_login_cache_hits_total',
      help: 'Successful logins answered from the cache of verified credentials, by protocol',
      labelNames: ['protocol'] as const,
      registers: [registry],
    }),
    compressedSessions: new Counter({
      name: 'mailyard_retrieval_compressed_sessions_total',
      help: 'IMAP sessions that turned on COMPRESS=DEFLATE (RFC 4978)',
      registers: [registry],
    }),
    commands: new Counter({
      name: 'mailyard_retrieval_commands_total',
      help: 'Commands handled, by protocol, command and result (ok, no, bad)',
      labelNames: ['protocol', 'command', 'result'] as const,
      registers: [registry],
    }),
    commandLatency: new Histogram({
      name: 'mailyard_retrieval_command_duration_seconds',
      help: 'Time to answer a command, by protocol and command',
      labelNames: ['protocol', 'command'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    sentBytes: new Counter({
      name: 'mailyard_retrieval_sent_bytes_total',
      help: 'Bytes sent to clients, by protocol',
      labelNames: ['protocol'] as const,
      registers: [registry],
    }),
    idleNotifications: new Counter({
      name: 'mailyard_retrieval_idle_notifications_total',
      help: 'mailbox.changed events that woke an idling session',
      registers: [registry],
    }),
    limitRejections: new Counter({
      name: 'mailyard_retrieval_limit_rejections_total',
      help: 'Sessions or commands refused by a limit, by limit',
      labelNames: ['limit'] as const,
      registers: [registry],
    }),
    messageFileReads: new Counter({
      name: 'mailyard_retrieval_message_file_reads_total',
      help: 'Message files read, by part (header: the header block only; full: the whole file)',
      labelNames: ['part'] as const,
      registers: [registry],
    }),
    indexAppends: new Counter({
      name: 'mailyard_retrieval_index_cache_records_written_total',
      help: "Records written to the folders' mailyard.index.cache files",
      registers: [registry],
    }),
    indexRewrites: new Counter({
      name: 'mailyard_retrieval_index_cache_rewrites_total',
      help: 'mailyard.index.cache files rewritten because most records were dead, damaged or not ours',
      registers: [registry],
    }),
  };
}
export type RetrievalMetrics = ReturnType<typeof createMetrics>;
