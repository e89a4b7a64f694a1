import { Counter, Gauge, Histogram, type Registry } from '@mailyard/observability';
import type { Route } from './transaction.js';

/** The services that run an intake: `mailyard_<service>_...` in metric names. */
export type IntakeService = 'mta-inbound' | 'msa';

/**
 * What an intake counts, one call per event; the log line of the same event goes with
 * it. The metric names are a contract with the dashboards (deploy/grafana) and with
 * whoever alerts on them, so each service keeps the names and labels it has always had:
 * see `outcomeCounters`.
 */
export interface IntakeMetrics {
  sessionOpened(listener: string): void;
  /** A command or a message refused, by the SmtpReject's reason. */
  rejected(reason: string): void;
  /** A message the policy service said to discard (answered 250, dropped). */
  discarded(): void;
  /** A message queued and confirmed, with its size as queued and its recipients by route. */
  accepted(bytes: number, routes: Record<Route, string[]>): void;
  /** A connection refused for being over a per-client limit (connection-count, connection-rate). */
  clientRefused(limit: string): void;
  /** A session ended because a command line, the message or the login did not arrive in time. */
  timedOut(kind: string): void;
  errorReply(code: number): void;
  /** Seconds from end of DATA to the 250 reply. */
  acceptLatency(seconds: number): void;
  /** Bytes of messages held in memory now, being received or queued (smtpd_data_memory_limit). */
  dataHeld(bytes: number): void;
  /** Seconds of one policy RPC round trip. */
  policyLatency(stage: string, outcome: string, seconds: number): void;
  /**
   * Seconds an accepted message waited for the policy service in all: its MAIL, RCPT and
   * DATA decisions, and the connect decision for the first message of a session.
   */
  policyTransaction(seconds: number): void;
  /** One stage's decision, made here (`local`) or asked of the policy service over the bus (`service`). */
  policyDecided(stage: string, where: 'local' | 'service' | 'with-rcpt'): void;
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export function createIntakeMetrics(registry: Registry, service: IntakeService): IntakeMetrics {
  const prefix = `mailyard_${service.replace(/-/g, '_')}`;
  const counter = <L extends string>(thing: string, help: string, labelNames: readonly L[] = []) =>
    new Counter<L>({ name: `${prefix}_${thing}`, help, labelNames, registers: [registry] });
  const histogram = <L extends string>(
    thing: string,
    help: string,
    labelNames: readonly L[],
    buckets: number[],
  ) => new Histogram<L>({ name: `${prefix}_${thing}`, help, labelNames, buckets, registers: [registry] });

  const errorReplies = counter('error_replies_total', 'Error replies sent, by SMTP code', ['code']);
  const bytes = counter(
    'received_bytes_total',
    'Bytes of accepted messages as queued (with our Received header; on submission after fix-ups and signing)',
  );
  const accept = histogram(
    'accept_latency_seconds',
    'From end of DATA to the 250 reply (checks, fix-ups and signing, the publisher confirm)',
    [],
    LATENCY_BUCKETS,
  );
  const policy = histogram(
    'policy_seconds',
    'Policy RPC round trip by stage and outcome (answered, timeout, error)',
    ['stage', 'outcome'],
    [...LATENCY_BUCKETS, 10, 30],
  );
  const policyTransaction = histogram(
    'policy_transaction_seconds',
    'Time an accepted message waited for policy decisions in all (connect for the first of a session, MAIL, RCPT, DATA)',
    [],
    [0.0005, 0.001, 0.002, ...LATENCY_BUCKETS.slice(2), 10, 30],
  );
  const policyDecisions = counter(
    'policy_decisions_total',
    "Policy decisions by stage, made in this process (local), asked of the policy service (service: one RPC each), or a MAIL stage left to the first RCPT's request (with-rcpt)",
    ['stage', 'where'],
  );
  const held = new Gauge({
    name: `${prefix}_data_held_bytes`,
    help: 'Bytes of messages held in memory now, being received or queued (bounded by smtpd_data_memory_limit)',
    registers: [registry],
  });
  const outcomes = outcomeCounters(service, counter);
  return {
    ...outcomes,
    accepted(size, routes) {
      outcomes.accepted(routes);
      bytes.inc(size);
    },
    errorReply: (code) => errorReplies.inc({ code: String(code) }),
    acceptLatency: (seconds) => accept.observe(seconds),
    dataHeld: (bytes) => held.set(bytes),
    policyLatency: (stage, outcome, seconds) => policy.observe({ stage, outcome }, seconds),
    policyTransaction: (seconds) => policyTransaction.observe(seconds),
    policyDecided: (stage, where) => policyDecisions.inc({ stage, where }),
  };
}

type CounterFactory = <L extends string>(
  thing: string,
  help: string,
  labelNames?: readonly L[],
) => Counter<L>;
type Outcomes = Pick<
  IntakeMetrics,
  'sessionOpened' | 'rejected' | 'discarded' | 'clientRefused' | 'timedOut'
> & {
  accepted(routes: Record<Route, string[]>): void;
};

/**
 * Sessions and outcomes under each service's names. mta-inbound counts messages by
 * result and reason, with refused connections and timeouts apart; msa counts
 * submissions and their recipients by route, and every refusal (connection limits and
 * timeouts too) by reason in one counter.
 */
function outcomeCounters(service: IntakeService, counter: CounterFactory): Outcomes {
  switch (service) {
    case 'mta-inbound': {
      const sessions = counter('sessions_total', 'SMTP sessions opened');
      const messages = counter('messages_total', 'Messages and recipients accepted or rejected, by reason', [
        'result',
        'reason',
      ]);
      const refused = counter(
        'refused_connections_total',
        'Connections refused with 421 for being over a per-client limit (connection-count, connection-rate)',
        ['limit'],
      );
      const timeouts = counter(
        'timeouts_total',
        'Sessions ended with 421 because a command line or the message did not arrive in time',
        ['kind'],
      );
      return {
        sessionOpened: () => sessions.inc(),
        rejected: (reason) => messages.inc({ result: 'rejected', reason }),
        discarded: () => messages.inc({ result: 'discarded', reason: 'policy' }),
        accepted: () => messages.inc({ result: 'accepted', reason: 'ok' }),
        clientRefused: (limit) => refused.inc({ limit }),
        timedOut: (kind) => timeouts.inc({ kind }),
      };
    }
    case 'msa': {
      const sessions = counter(
        'sessions_total',
        'Submission sessions opened, by listener (submission = 587 STARTTLS, submissions = 465 implicit TLS)',
        ['listener'],
      );
      const submissions = counter(
        'submissions_total',
        'Messages accepted (queued and confirmed by the broker)',
      );
      const recipients = counter(
        'recipients_total',
        'Recipients of accepted messages, by route (delivery = local, outbound = remote)',
        ['route'],
      );
      const rejections = counter('rejections_total', 'Commands and messages refused, by reason', ['reason']);
      return {
        sessionOpened: (listener) => sessions.inc({ listener }),
        rejected: (reason) => rejections.inc({ reason }),
        discarded: () => rejections.inc({ reason: 'policy_discard' }),
        accepted(routes) {
          submissions.inc();
          for (const [route, list] of Object.entries(routes))
            if (list.length) recipients.inc({ route }, list.length);
        },
        clientRefused: (limit) => rejections.inc({ reason: limit.replace('-', '_') }),
        timedOut: (kind) => rejections.inc({ reason: `${kind}_timeout` }),
      };
    }
  }
}
