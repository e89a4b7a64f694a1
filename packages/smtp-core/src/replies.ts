/**
 * SMTP replies as named factories: the basic code (RFC 5321 §4.2) and the enhanced
 * status code (RFC 3463) live together here, never spelled out at the call site.
 */
import { plural } from './plural.js';

export class SmtpReject extends Error {
  override readonly name = 'SmtpReject';
  /** Read by smtp-server to pick the reply code. */
  readonly responseCode: number;
  constructor(
    readonly code: number,
    readonly enhanced: string,
    readonly text: string,
    /** Short stable reason for metrics and logs (`relay_denied`, `unknown_user`...). */
    readonly reason: string,
  ) {
    super(`${enhanced} ${text}`);
    this.responseCode = code;
  }
  /** The reply line as sent on the wire. */
  get line(): string {
    return `${this.code} ${this.enhanced} ${this.text}`;
  }
  get temporary(): boolean {
    return this.code >= 400 && this.code < 500;
  }
}

const r = (code: number, enhanced: string, text: string, reason: string) =>
  new SmtpReject(code, enhanced, text, reason);

export const reply = {
  // RFC 3463 §3.2 X.1.1 bad destination mailbox address
  noSuchUser: (rcpt: string) =>
    r(550, '5.1.1', `<${rcpt}>: Recipient address rejected: User unknown`, 'unknown_user'),
  // X.7.1 delivery not authorized (Postfix: "Relay access denied")
  relayDenied: (rcpt: string) => r(554, '5.7.1', `<${rcpt}>: Relay access denied`, 'relay_denied'),
  // X.1.3 bad destination mailbox address syntax
  badRecipientSyntax: (rcpt: string) =>
    r(501, '5.1.3', `<${rcpt}>: Recipient address rejected: bad address syntax`, 'bad_rcpt_syntax'),
  badSenderSyntax: (from: string) =>
    r(501, '5.1.7', `<${from}>: Sender address rejected: bad address syntax`, 'bad_sender_syntax'),
  // Submission (RFC 6409, RFC 4954). X.7.1: Postfix's reject_sender_login_mismatch
  senderLoginMismatch: (from: string, user: string) =>
    r(553, '5.7.1', `<${from}>: Sender address rejected: not owned by user ${user}`, 'sender_login_mismatch'),
  // after DATA, RFC 5321 §4.3.2 allows no 553: 550 as Postfix's header checks answer
  headerFromMismatch: (from: string, user: string) =>
    r(
      550,
      '5.7.1',
      `<${from}>: From: header address rejected: not owned by user ${user}`,
      'header_from_mismatch',
    ),
  // RFC 3207 §4: TLS is required and the client has not started it (Postfix's wording)
  tlsRequired: () => r(530, '5.7.0', 'Must issue a STARTTLS command first', 'tls_required'),
  // RFC 4954 §6: 530 5.7.0 Authentication required
  authRequired: () => r(530, '5.7.0', 'Authentication required', 'auth_required'),
  // RFC 4954 §6: 535 5.7.8 Authentication credentials invalid (never says which part was wrong)
  authInvalid: () => r(535, '5.7.8', 'Authentication credentials invalid', 'auth_invalid'),
  // RFC 4954 §6: 454 4.7.0 Temporary authentication failure
  authLocked: (retryAfterSeconds: number) =>
    r(
      454,
      '4.7.0',
      `Too many failed login attempts, try again in ${plural(retryAfterSeconds, 'second')}`,
      'auth_locked',
    ),
  // RFC 4954 §4: the client cancelled the exchange with "*"; X.7.0 other security status,
  // as Postfix says (nothing in the command was invalid: not X.5.4)
  authAborted: () => r(501, '5.7.0', 'Authentication aborted', 'auth_aborted'),
  // RFC 4954 §4: a response that is not base64 (Postfix's wording)
  authBadBase64: () => r(501, '5.5.2', 'Cannot decode response', 'auth_bad_base64'),
  authTempFail: () => r(454, '4.7.0', 'Temporary authentication failure, try again later', 'auth_temp_fail'),
  // X.1.2 bad destination system address: no MX and no A/AAAA, or a null MX (RFC 7505 §4.2)
  noMxDomain: (rcpt: string, domain: string) =>
    r(
      550,
      '5.1.2',
      `<${rcpt}>: Recipient address rejected: domain ${domain} does not accept mail`,
      'no_mx_domain',
    ),
  // X.4.3 directory server failure: DNS could not answer now; the client should retry
  dnsTempFail: (rcpt: string) =>
    r(
      450,
      '4.4.3',
      `<${rcpt}>: Recipient address rejected: domain lookup failed, try again later`,
      'dns_temp_fail',
    ),
  // RFC 5321 §4.5.3.1.8: 452 for too many recipients; X.5.3 too many recipients
  tooManyRecipients: () => r(452, '4.5.3', 'Error: too many recipients', 'too_many_recipients'),
  // X.3.4 message too big for system
  messageTooBig: (limit: number) =>
    r(552, '5.3.4', `Error: message exceeds fixed maximum message size ${limit}`, 'too_big'),
  // X.3.0 other or undefined mail system status: the queue could not take the message
  queueUnavailable: () =>
    r(451, '4.3.0', 'Error: queue file write error, try again later', 'queue_unavailable'),
  localError: () => r(451, '4.3.0', 'Error: local error in processing, try again later', 'local_error'),
  // the DKIM key store failed: sent unsigned, the message would fail DMARC at its receivers,
  // so the client is told to retry (X.3.0 as for the other local failures above)
  signingUnavailable: () =>
    r(451, '4.3.0', 'Error: message could not be signed, try again later', 'dkim_unavailable'),
  // the client was told 421 or left while its message was decided: nothing is queued (it
  // sends the message again); logged and counted, never read by the client
  sessionEnded: () => r(451, '4.3.0', 'Error: session ended before the message was queued', 'session_ended'),
  // the same before the greeting, where RFC 5321 §3.1 allows only 220, 554 or 421
  localErrorAtConnect: () =>
    r(421, '4.3.0', 'Error: local error in processing, try again later', 'local_error'),
  // X.3.1 mail system full (Postfix's answer when its queue file system is short of space):
  // RabbitMQ refuses publishes under a memory or disk alarm
  insufficientStorage: () => r(452, '4.3.1', 'Insufficient system storage', 'insufficient_storage'),
  // RFC 5321 §2.3.8 and the 2023 SMTP smuggling disclosures: refuse bare CR/LF before a dot line
  bareLineEnding: () =>
    r(
      554,
      '5.6.0',
      'Message refused: bare <CR> or <LF> before a "." line (RFC 5321 section 2.3.8)',
      'bare_lf_dot',
    ),
  // RFC 3463 X.5.4: the command's arguments are not of its form (Postfix: "Syntax: ...")
  commandSyntax: (form: string) => r(501, '5.5.4', `Syntax: ${form}`, 'command_syntax'),
  // RFC 5321 §4.1.1.11: a MAIL or RCPT parameter of an extension not offered, or a value
  // it does not take (Postfix: "Unsupported option")
  unsupportedParameter: (param: string) =>
    r(555, '5.5.4', `Unsupported option: ${param}`, 'unsupported_parameter'),
  // RFC 2920 §3.1 (Postfix's smtpd_forbid_unauth_pipelining): input before the reply it needed
  improperPipelining: () => r(554, '5.5.0', 'Error: SMTP protocol synchronization', 'improper_pipelining'),
  proxyRefused: () => r(421, '4.7.0', 'Error: PROXY header refused, closing connection', 'proxy_refused'),
  // Postfix's answer when smtpd_timeout (or the per-request deadline) passes; X.4.2 bad connection
  timeoutExceeded: () => r(421, '4.4.2', 'Error: timeout exceeded', 'timeout'),
  // no successful AUTH within the time allowed before authentication (submission)
  loginTimeout: () =>
    r(421, '4.7.0', 'Error: not authenticated in time, closing connection', 'login_timeout'),
  // Postfix's answer over smtpd_client_connection_count_limit or _rate_limit
  tooManyConnections: (ip: string) =>
    r(421, '4.7.0', `Error: too many connections from ${ip}`, 'too_many_connections'),
  tooManyErrors: () => r(421, '4.7.0', 'Error: too many errors, closing connection', 'too_many_errors'),
  // X.3.2 system not accepting network messages: the server stops (Postfix's answer too)
  shuttingDown: () => r(421, '4.3.2', 'Service shutting down, closing connection', 'shutting_down'),
  // the answer to DATA when the server stops before the broker confirmed the message: the
  // client sends it again (the broker may still take the first copy: a duplicate, never a
  // loss), as it would have after a crash
  shuttingDownUnconfirmed: () =>
    r(
      421,
      '4.3.2',
      'Service shutting down before the message was queued, try again later',
      'shutting_down_unconfirmed',
    ),
  // the session's credential stopped being valid (an app password revoked, the password
  // changed, a sign-out everywhere): X.7.0 other security status
  credentialRevoked: (why = 'The app password of this session was revoked') =>
    r(
      421,
      '4.7.0',
      `Error: ${why.charAt(0).toLowerCase()}${why.slice(1)}, closing connection`,
      'credential_revoked',
    ),
  // X.4.6 routing loop detected (Postfix: "5.4.6 Error: too many hops")
  tooManyHops: () => r(554, '5.4.6', 'Error: too many hops', 'too_many_hops'),
  // X.3.4 message too big for system: its header section (see header-limits.ts)
  headerTooLarge: () => r(552, '5.3.4', 'Error: message header too large', 'header_too_large'),
  lineTooLong: (limit: number) =>
    r(500, '5.5.2', `Error: line longer than ${limit} characters`, 'line_too_long'),
  overQuota: (rcpt: string) => r(452, '4.2.2', `<${rcpt}>: Mailbox full`, 'over_quota'),
} as const;
