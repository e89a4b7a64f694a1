import { z } from 'zod';
import { Headers } from './bus-names.js';

/**
 * The policy RPC: mta-inbound and msa ask services/policy at each SMTP stage over
 * RabbitMQ (queue `policy`, direct reply-to). The request travels as the JSON header
 * `x-mailyard-policy-request`; at end of DATA the raw message is the body.
 *
 * Versioned like the envelope: bump `v` for a change an older peer would misread.
 */
export const POLICY_VERSION = 1;
export const POLICY_REQUEST_HEADER = 'x-mailyard-policy-request';
/** Matches a reply to its request (the Bus sets its own message ids). */
export const POLICY_CORRELATION_HEADER = Headers.correlationId;

/**
 * SMTP stages. HELO restrictions are evaluated with MAIL FROM (smtp-server has no
 * HELO hook; Postfix's smtpd_delay_reject=yes does the same): stage `mail` runs the
 * helo and sender lists, `rcpt` the relay and recipient lists.
 */
export const PolicyStage = z.enum(['connect', 'mail', 'rcpt', 'data']);
export type PolicyStage = z.infer<typeof PolicyStage>;

export const PolicyRequest = z.object({
  v: z.literal(POLICY_VERSION),
  stage: PolicyStage,
  /** Who asks: port 25 (mta-inbound), submission (msa), or a Postfix via the delegation protocol. */
  origin: z.enum(['mta-inbound', 'msa', 'postfix']),
  sessionId: z.string().min(1),
  /** Known at the data stage (the id the message will be queued under). */
  queueId: z.string().nullable().default(null),
  client: z.object({
    ip: z.string().min(1),
    /** Reverse name the listener saw, if any (the policy service checks FCrDNS itself). */
    hostname: z.string().nullable().default(null),
    helo: z.string().default(''),
  }),
  /** SASL user on submission, else null. */
  user: z.string().nullable().default(null),
  /** MAIL FROM; '' is the null sender; null before MAIL. */
  sender: z.string().nullable().default(null),
  /** The recipient of this RCPT command (stage rcpt). */
  recipient: z.string().nullable().default(null),
  /** Recipients accepted so far (all of them at the data stage). */
  recipients: z.array(z.string()).default([]),
  /** Declared SIZE or actual size at the data stage. */
  size: z.number().int().nonnegative().nullable().default(null),
  tls: z.boolean().default(false),
  /**
   * Stage rcpt: the MAIL stage's lists were left to this request and run first, as
   * Postfix's smtpd_delay_reject does (a refusal of theirs answers this RCPT). Sent only
   * to a service that publishes `mail_with_rcpt` in its settings: an older one would
   * drop the field and skip those lists.
   */
  withMail: z.boolean().default(false),
});
export type PolicyRequest = z.infer<typeof PolicyRequest>;
export type PolicyRequestInput = z.input<typeof PolicyRequest>;

/** One check that fired, for the reasons header, the log and `mailyard policy explain`. */
export const PolicyReason = z.object({
  check: z.string(),
  result: z.string(),
  detail: z.string().optional(),
  score: z.number().optional(),
});
export type PolicyReason = z.infer<typeof PolicyReason>;

export const PolicyReply = z.object({
  code: z.number().int().min(400).max(599),
  enhanced: z.string().regex(/^[45]\.\d{1,3}\.\d{1,3}$/),
  text: z.string(),
});
export type PolicyReply = z.infer<typeof PolicyReply>;

/**
 * What to do. The first decisive verdict wins (Haraka-style):
 *  - continue: nothing decided, go on;
 *  - accept: skip the remaining pre-DATA checks of this transaction;
 *  - reject / tempfail: reply with `reply` (5xx / 4xx);
 *  - quarantine: accept, file into Junk (every recipient, or those in `junk`);
 *  - discard: answer 250 and drop the message.
 */
export const PolicyAction = z.enum(['continue', 'accept', 'reject', 'tempfail', 'quarantine', 'discard']);
export type PolicyAction = z.infer<typeof PolicyAction>;

export const PolicyDecision = z.object({
  v: z.literal(POLICY_VERSION),
  action: PolicyAction,
  reply: PolicyReply.nullable().default(null),
  /** Headers to prepend to the message (data stage). */
  headers: z.array(z.object({ name: z.string(), value: z.string() })).default([]),
  /** Headers to remove before prepending: by name, and optionally when the value starts with `valuePrefix`
   *  (used to drop forged Authentication-Results that carry our authserv-id). */
  removeHeaders: z.array(z.object({ name: z.string(), valuePrefix: z.string().optional() })).default([]),
  /** Recipients whose copy goes into Junk (per-user lists can spare some). */
  junk: z.array(z.string()).default([]),
  /** Bulk/advertising mail: delivery may file it into the promotions folder. */
  bulk: z.boolean().default(false),
  reasons: z.array(PolicyReason).default([]),
  /**
   * A RCPT that carried the MAIL stage (PolicyRequest.withMail): MAIL's lists passed, with
   * this verdict, whatever the RCPT's own lists said. The intake does not send them again
   * with the next RCPT of the transaction, so a refused recipient does not count the
   * message again in MAIL's rate limits.
   */
  mailPassed: z.enum(['continue', 'quarantine']).optional(),
});
export type PolicyDecision = z.infer<typeof PolicyDecision>;
export type PolicyDecisionInput = z.input<typeof PolicyDecision>;

/** How the message of an accepted transaction is filed (carried in the envelope). */
export const Filing = z.object({
  /** Recipients (as given in RCPT TO) whose copy goes into Junk. */
  junk: z.array(z.string()).default([]),
  bulk: z.boolean().default(false),
});
export type Filing = z.infer<typeof Filing>;

/** learn.spam / learn.ham: a user moved a message into or out of Junk. */
export const LearnEvent = z.object({
  v: z.literal(1),
  account: z.string(),
  queueId: z.string().nullable().default(null),
  /** The raw message, base64. */
  message: z.string(),
});
export type LearnEvent = z.infer<typeof LearnEvent>;
