import type { PolicyReply } from '@mailyard/contracts';
import { plural } from '@mailyard/smtp-core';

/**
 * Every reply a restriction can give, as named factories: the code (RFC 5321 §4.2), the
 * enhanced status (RFC 3463, RFC 7372 for the email authentication ones) and Postfix's
 * wording, kept in one place so a check names the refusal it means and never spells
 * out a code. Each check declares the factories it uses (`replies` in CHECKS); the
 * policy service adds `(ref ID)` to the text.
 */
const r = (code: number, enhanced: string, text: string): PolicyReply => ({ code, enhanced, text });

export const policyReply = {
  // the bare `reject` and `defer` restrictions (Postfix's texts)
  accessDenied: () => r(554, '5.7.1', 'Error: access denied'),
  tryLater: () => r(450, '4.7.1', 'Error: try again later'),
  // X.7.1 delivery not authorized; the same text as smtp-core's reply.relayDenied
  relayDenied: (rcpt: string) => r(554, '5.7.1', `<${rcpt}>: Relay access denied`),
  // RFC 7372 §3.3 X.7.25 reverse DNS validation failed
  noReverseHostname: (ip: string) =>
    r(550, '5.7.25', `Client host rejected: cannot find your reverse hostname, [${ip}]`),
  noClientHostname: (ip: string) =>
    r(550, '5.7.25', `Client host rejected: cannot find your hostname, [${ip}]`),
  clientDnsTempFail: (ip: string) =>
    r(450, '4.7.25', `Error: temporary DNS failure while checking [${ip}], try again later`),
  // X.5.2 syntax error
  invalidHelo: (helo: string) => r(501, '5.5.2', `<${helo}>: Helo command rejected: Invalid name`),
  nonFqdnHelo: (helo: string) =>
    r(504, '5.5.2', `<${helo}>: Helo command rejected: need fully-qualified hostname`),
  nonFqdnSender: (sender: string) =>
    r(504, '5.5.2', `<${sender}>: Sender address rejected: need fully-qualified address`),
  nonFqdnRecipient: (rcpt: string) =>
    r(504, '5.5.2', `<${rcpt}>: Recipient address rejected: need fully-qualified address`),
  // X.1.8 bad sender's system address
  senderDomainNotFound: (sender: string) =>
    r(550, '5.1.8', `<${sender}>: Sender address rejected: Domain not found`),
  senderDomainTempFail: (sender: string) =>
    r(450, '4.1.8', `<${sender}>: Sender address rejected: Domain not found (temporary DNS failure)`),
  /** An access table's REJECT/DEFER/NNN action: its own code, Postfix's wording around its text. */
  accessRefused: (
    action: { code: number; enhanced: string; text: string | null },
    subject: string,
    what: string,
  ) => r(action.code, action.enhanced, `${subject}: ${what} rejected: ${action.text ?? 'Access denied'}`),
  dnsblTempFail: (zone: string) =>
    r(450, '4.7.1', `Service temporarily unavailable: ${zone} lookup failed, try again later`),
  dnsblListed: (subject: string, zone: string, codes: string[]) =>
    r(554, '5.7.1', `Service unavailable; ${subject} blocked using ${zone} (${codes.join(',')})`),
  greylisted: (rcpt: string, seconds: number) =>
    r(
      450,
      '4.7.1',
      `<${rcpt}>: Recipient address rejected: Greylisted, try again in ${plural(seconds, 'second')}`,
    ),
  // RFC 5321 §4.5.3.1.10: 452 for too many recipients; X.5.3 (as smtp-core's reply.tooManyRecipients)
  tooManyRecipients: () => r(452, '4.5.3', 'Error: too many recipients'),
  // the rate counters (check_rate); X.7.1, temporary: the window moves on
  tooManyConnections: (ip: string) =>
    r(450, '4.7.1', `Error: too many connections from [${ip}], try again later`),
  tooManyClientMessages: (ip: string) =>
    r(450, '4.7.1', `Error: too many messages from [${ip}], try again later`),
  tooManyDomainMessages: (domain: string) =>
    r(450, '4.7.1', `Error: too many messages from ${domain}, try again later`),
  userTooManyRecipients: (user: string) =>
    r(450, '4.7.1', `Error: ${user} sent to too many recipients, try again later`),
  senderBlocked: (rcpt: string) =>
    r(550, '5.7.1', `<${rcpt}>: Recipient address rejected: sender blocked by the recipient`),
  // the scanner's signature name goes into the reply: printable ASCII only
  virusFound: (signature: string) =>
    r(554, '5.7.1', `Message rejected: virus found: ${signature.replace(/[^\x21-\x7e ]/g, '')}`),
  filterUnavailable: () => r(451, '4.7.1', 'Error: content filter temporarily unavailable, try again later'),
  // RFC 7372 §3.2 X.7.24 SPF validation error
  spfTempError: () => r(451, '4.7.24', 'Error: temporary SPF validation error, try again later'),
  dmarcTempError: () => r(451, '4.7.1', 'Error: temporary DMARC validation error, try again later'),
  // X.7.5 cryptographic failure: a DKIM key that could not be fetched
  dkimTempError: () => r(451, '4.7.5', 'Error: temporary DKIM validation error, try again later'),
  dmarcReject: (domain: string | undefined) =>
    r(550, '5.7.1', `Message rejected: DMARC policy of ${domain ?? 'the sender domain'} says reject`),
  // RFC 7372 §3.2 X.7.23 SPF validation failed
  spfFail: () => r(550, '5.7.23', 'Message rejected: SPF validation failed'),
  spam: () => r(554, '5.7.1', 'Message rejected as spam'),
  spamTryLater: () => r(451, '4.7.1', 'Error: try again later'),
  spamGreylisted: (seconds: number) =>
    r(451, '4.7.1', `Error: greylisted by the spam filter, try again in ${plural(seconds, 'second')}`),
  // X.3.0: a check failed inside the policy service; logged with its stack
  localError: () => r(451, '4.3.0', 'Error: local error in policy processing, try again later'),
  invalidRequest: () => r(451, '4.3.0', 'Error: invalid policy request'),
} as const;

export type PolicyReplies = typeof policyReply;
export type ReplyName = keyof PolicyReplies;
