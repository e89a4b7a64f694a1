import type {
  SMTPServerAuthentication,
  SMTPServerAuthenticationResponse,
  SMTPServerSession,
} from 'smtp-server';
import type { SmtpReject } from '@mailyard/smtp-core';
import type { IntakeService } from './metrics.js';
import type { Route } from './transaction.js';

export interface ListenerSpec {
  /** Port to listen on (0 picks a free one). */
  port: number;
  /** TLS from the first byte (RFC 8314 §3.3); otherwise STARTTLS is offered. */
  implicitTls: boolean;
}

/** AUTH as a submission service offers it: only once TLS is up (RFC 6409 §4.3, RFC 8314 §3.2). */
export interface IntakeAuth {
  methods: string[];
  /** Time from connect to a successful AUTH, however active the client is; 0: none. */
  loginDeadlineMs: number;
  /** smtp-server's onAuth: the user name in the response becomes `session.user`. */
  onAuth: (
    auth: SMTPServerAuthentication,
    session: SMTPServerSession,
    cb: (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void,
  ) => void;
}

/** What the role gets to turn the message into what is queued. */
export interface FinishContext {
  session: SMTPServerSession;
  queueId: string;
  mailFrom: string;
  /** Our Received header for this message (RFC 5321 §4.4), in the role's flavour. */
  trace: string;
  routes: Record<Route, string[]>;
  /** The body type the client declared (MAIL FROM's BODY=, RFC 6152 and RFC 3030). */
  body: '7BIT' | '8BITMIME' | 'BINARYMIME';
}

/** The message to queue, and what the `accepted` log line should say about the role's changes. */
export interface Finished {
  message: Buffer;
  /**
   * The message's body type once the role has changed it: `7BIT` when 8-bit content was
   * converted (the msa, before signing); the session's BODY= otherwise.
   */
  body?: '7BIT';
  log?: Record<string, unknown>;
}

/**
 * What makes one intake the MTA of port 25 or the MSA of 587/465 (mox serves both from
 * one server with a submission flag; here the flag is this object). Every check throws
 * an SmtpReject to refuse; anything else thrown is a temporary failure (451 4.3.0),
 * logged with its stack.
 */
export interface IntakeRole<L extends string> {
  /** The policy request origin; names the metrics (`mailyard_<service>_...`) and log lines. */
  service: IntakeService;
  /** Text after "<myhostname> ESMTP" in the greeting. */
  banner: string;
  /**
   * The listeners by name: the name labels metrics and log lines and keys the
   * per-client connection rate in Redis (so a rename restarts the count).
   */
  listeners: Record<L, ListenerSpec>;
  /** Look up the client's reverse DNS name (Received header, policy requests). */
  reverseLookup: boolean;
  /** Early-talker wait before the greeting, in ms; 0: none (Postfix: postscreen_greet_wait). */
  greetingDelay: number;
  /** Clients the per-client connection limits spare. */
  limitExceptions: string[];
  /**
   * When the policy's client list (smtpd_client_restrictions) runs: `connect` (port 25),
   * or `login`: once the session has logged in, at its first MAIL, with the SASL user in
   * the request, as Postfix's smtpd_delay_reject=yes runs it at RCPT, after AUTH. On
   * submission, where nothing is accepted before AUTH, a client refused at connect could
   * never log in: a user on a dynamic address a DNS list names would be locked out.
   */
  clientRestrictions: 'connect' | 'login';
  /** AUTH after TLS; without it AUTH is not a command at all (port 25). */
  auth?: IntakeAuth;
  /** How our Received header names the client: `authenticated` (ESMTPSA) and `hideClient` (submission privacy). */
  received: { authenticated: boolean; hideClient: boolean };
  /** Called when a session ends, whatever ended it. */
  onClose?: (session: SMTPServerSession) => void;
  /** A refusal for a session that may not start a transaction (MAIL, RCPT, DATA); null when it may. */
  mayTransact?(session: SMTPServerSession): SmtpReject | null;
  /** MAIL FROM after the intake's checks (syntax, size, queue), before the policy service is asked. */
  checkSender?(address: string, session: SMTPServerSession): Promise<void>;
  /** Where a recipient goes; `path` is the forward-path as written, source route included. */
  routeRecipient(path: string, session: SMTPServerSession): Promise<Route>;
  /**
   * The address `RCPT TO:<postmaster>` (no domain, any case) stands for; RFC 5321 §4.5.1
   * says it must be accepted. Without it, such a recipient is bad syntax.
   */
  postmaster?(): Promise<string>;
  /** Refusals on the content, before the policy service scans it. */
  checkMessage?(message: Buffer, session: SMTPServerSession): Promise<void>;
  /** The message as queued, from the message after the policy's edits; by default `trace` + message. */
  finish?(message: Buffer, ctx: FinishContext): Promise<Finished>;
}
