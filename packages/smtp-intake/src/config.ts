import { totalmem } from 'node:os';
import type { z } from 'zod';
import {
  authservSchema,
  bool,
  bytesOrUnlimited,
  cidrList,
  messageSizeSchema,
  nonNegativeInt,
  positiveInt,
  timerDuration,
  tlsFilesSchema,
} from '@mailyard/config';
import { policyClientSchema } from '@mailyard/policy-client';

/**
 * The settings of an SMTP intake, the same keys and defaults on port 25 (mta-inbound)
 * and on submission (msa): spread into each service's schema. Names follow Postfix's
 * smtpd where it has one.
 */
export const intakeSchema = {
  ...tlsFilesSchema,
  ...messageSizeSchema,
  /** Recipients per message (Postfix: smtpd_recipient_limit). */
  smtpd_recipient_limit: positiveInt(1000),
  /** Longest SMTP command line in bytes (Postfix: line_length_limit). */
  line_length_limit: positiveInt(2048),
  /** Error replies before 421 and disconnect (Postfix: smtpd_hard_error_limit). */
  smtpd_hard_error_limit: positiveInt(20),
  /**
   * NOOP, RSET, VRFY and HELP a client not logged in may send before each counts towards
   * the hard error limit (Postfix: smtpd_junk_command_limit).
   */
  smtpd_junk_command_limit: positiveInt(100),
  /**
   * RFC 2920 §3.1 pipelining constraints for a client not logged in (Postfix >= 3.9's
   * default): a command sent before the reply to HELO, EHLO, NOOP, VRFY or DATA, or any
   * command pipelined where PIPELINING was not offered (before EHLO, after HELO), is
   * answered 554 5.5.0 and the session closed. Such a client does not read replies: a
   * spam engine blasting a whole transaction, or an SMTP smuggling attempt. Legitimate
   * pipelining (MAIL, RCPT..., DATA last) is unaffected; after AUTH anything goes. Off:
   * only message content sent with DATA, before the 354, is refused so.
   */
  smtpd_forbid_unauth_pipelining: bool(true),
  /** Idle time before the session is closed (Postfix: smtpd_timeout). */
  smtpd_timeout: timerDuration('300s'),
  /**
   * smtpd_timeout bounds a whole command line, and the message at smtpd_min_data_rate,
   * not only the gaps between bytes (Postfix 3.7's smtpd_per_request_deadline, which
   * Postfix turns on under stress). On by default: otherwise a client sending a byte
   * every few seconds holds its slot forever, and no client needs smtpd_timeout for a line.
   */
  smtpd_per_request_deadline: bool(true),
  /** Bytes a second a message must arrive at under the per-request deadline (Postfix: smtpd_min_data_rate). */
  smtpd_min_data_rate: positiveInt(500),
  /** Simultaneous sessions over all clients, per port (Postfix: the smtpd process limit). */
  smtpd_max_clients: positiveInt(500),
  /**
   * Bytes of messages this process holds in memory at once, being received or queued,
   * over all sessions; past it a message gets 452 4.3.1 and is sent again later, as
   * Postfix answers when its queue file system is full. smtpd_max_clients sessions of
   * message_size_limit each would be 12.5 GB; by default a quarter of the memory the
   * process may use (its cgroup's limit, else the machine's), and never below
   * message_size_limit (one message of that size always fits). 0: no limit.
   */
  smtpd_data_memory_limit: bytesOrUnlimited(defaultDataMemory()),
  /** Simultaneous sessions from one client address (IPv6: one /64), per port, in this process; 0: no limit. */
  smtpd_client_connection_count_limit: nonNegativeInt(50),
  /**
   * New connections per minute from one client address, per port, over all instances
   * (Redis); 0: no limit. Postfix has none by default; 300 (mox's default) is five a
   * second, far above what a sending server, an office behind one address or its mail
   * clients need (they keep their connections for several messages), yet it bounds the
   * TLS handshakes, reverse lookups and policy requests one address can cost us.
   */
  smtpd_client_connection_rate_limit: nonNegativeInt(300),
  /** Load balancers allowed to send a PROXY protocol header (v1/v2); empty: nobody. */
  proxy_protocol_trusted_networks: cidrList([]),
  /**
   * Ask services/policy at connect, MAIL FROM, RCPT TO and end of DATA (RPC over
   * RabbitMQ). Off by default, so that a deployment without the policy service keeps
   * working (only the built-in checks); docker-compose.yml turns it on wherever the
   * policy service runs.
   */
  policy_enabled: bool(false),
  /**
   * Decide a stage here when every entry reached is cheap (syntax, mynetworks, access
   * tables, user lists, cached DNS; at DATA mailauth, and rspamd and clamd asked from
   * here), with the policy service's rules and settings, reloaded live; only stages
   * reaching greylisting, rate counters or DNS lists are asked over the bus. Same
   * verdicts, fewer RPCs.
   */
  policy_local_decisions: bool(true),
  /** How long to wait for a policy decision before connect, MAIL and RCPT. */
  policy_timeout: timerDuration('5s'),
  /** How long to wait for the end-of-DATA decision (virus and spam scanning included). */
  policy_data_timeout: timerDuration('60s'),
  /**
   * Results under it that come with a message are removed, with our X-Mailyard-* verdict
   * headers, whatever the policy decided (keep it equal to the policy service's).
   */
  ...authservSchema,
  /** No decision: smtpd_policy_service_default_action and the circuit breaker (policy-client). */
  ...policyClientSchema,
};

/** What the intake reads from a service's config: its own keys and a few common ones. */
export type IntakeConfig = z.infer<z.ZodObject<typeof intakeSchema>> & {
  amqp_url: string;
  redis_prefix: string;
  myhostname: string;
  listen_address: string;
  shutdown_grace: number;
};

/** A quarter of the memory this process may use: its container's limit, else the machine's. */
function defaultDataMemory(): number {
  const constrained = process.constrainedMemory?.() ?? 0;
  const total = totalmem();
  return Math.floor((constrained > 0 && constrained < total ? constrained : total) / 4);
}
