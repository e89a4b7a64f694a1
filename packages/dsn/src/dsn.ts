import { isAscii } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import type { Envelope } from '@mailyard/contracts';
import { derivedQueueId, rfc5322Date } from '@mailyard/smtp-core';

/** What happened to one recipient, as a DSN reports it (RFC 3464 §2.3). */
export interface RecipientReport {
  recipient: string;
  action: 'failed' | 'delayed';
  /** RFC 3463 status, e.g. 5.1.1. */
  status: string;
  /** The remote reply (`smtp; 550 5.1.1 ...`), or our own reason when there was none. */
  diagnostic: string;
  /** Host that gave the reply, when one did. */
  remoteMta: string | null;
  /**
   * The recipient as the sender's ORCPT parameter gave it (RFC 3461 §4.2: address type
   * and address, xtext decoded). Only then does the DSN name an Original-Recipient.
   */
  originalRecipient?: { type: string; address: string } | undefined;
}

export interface DsnInput {
  myhostname: string;
  original: Envelope;
  message: Buffer;
  reports: RecipientReport[];
  /** Delay warning: until when we keep trying. */
  willRetryUntil?: Date;
  now?: Date;
}

/** The header block of a message (up to the first empty line), line endings made CRLF. */
export function headerBlock(message: Buffer): Buffer {
  let end = message.indexOf('\r\n\r\n');
  const lf = message.indexOf('\n\n');
  if (end === -1 || (lf !== -1 && lf < end)) {
    end = lf;
    if (end !== -1) end += 1;
  } else end += 2;
  const block = end === -1 ? message : message.subarray(0, end);
  return Buffer.from(
    block
      .toString('utf8')
      .replace(/\r?\n/g, '\r\n')
      .replace(/(\r\n)?$/, '\r\n'),
  );
}

const clean = (s: string) => s.replace(/[\r\n]+/g, ' ').slice(0, 900);

/**
 * A delivery status notification (RFC 3464, RFC 3462 multipart/report): a human part,
 * the machine-readable message/delivery-status, and the original message's headers
 * as text/rfc822-headers. From MAILER-DAEMON, to be sent with the null sender so it
 * can never bounce back (RFC 5321 §4.5.5).
 */
export function buildDsn(input: DsnInput): { envelope: Envelope; message: Buffer } {
  const now = input.now ?? new Date();
  const { original, myhostname } = input;
  // The same report made again has the same queue id (and Message-ID): a run killed
  // between the DSN's confirm and the record that it was sent runs again and sends it
  // again, and the next hop's duplicate checks per queue id and recipient (delivery's
  // markers, the relay's records) then keep the sender from getting it twice.
  const queueId = derivedQueueId(
    original.queueId,
    ['dsn', ...input.reports.map((r) => `${r.action} ${r.recipient.toLowerCase()}`).sort()].join('\n'),
  );
  const boundary = `${queueId}.${randomBytes(6).toString('hex')}/${myhostname}`;
  const delay = input.reports.every((r) => r.action === 'delayed');
  const subject = delay ? 'Delayed Mail (still being retried)' : 'Undelivered Mail Returned to Sender';
  const headers = headerBlock(input.message);
  const eightBit = !isAscii(headers);

  const human = delay
    ? [
        `This is the mail system at host ${myhostname}.`,
        '',
        '####################################################################',
        '# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #',
        '####################################################################',
        '',
        'Your message could not be delivered yet. The mail system will keep trying',
        `until ${input.willRetryUntil ? rfc5322Date(input.willRetryUntil) : 'it expires'}.`,
        '',
        ...input.reports.map((r) => `<${r.recipient}>: ${clean(r.diagnostic)}`),
      ]
    : [
        `This is the mail system at host ${myhostname}.`,
        '',
        "I'm sorry to have to inform you that your message could not",
        'be delivered to one or more recipients. It is attached below.',
        '',
        'The mail system',
        '',
        ...input.reports.map((r) => `<${r.recipient}>: ${clean(r.diagnostic)}`),
      ];

  // RFC 3464 §2.2 per-message fields, §2.3 per-recipient fields
  const perMessage = [
    `Reporting-MTA: dns; ${myhostname}`,
    `X-Mailyard-Queue-ID: ${original.queueId}`,
    `Arrival-Date: ${rfc5322Date(new Date(original.receivedAt))}`,
  ];
  const perRecipient = input.reports.map((r) => {
    const f = [`Final-Recipient: rfc822; ${clean(r.recipient)}`];
    // RFC 3461 §6.3 (d): from the ORCPT parameter, and absent without one (the recipient
    // we were given may already be an alias's target, not what the sender wrote)
    if (r.originalRecipient)
      f.push(`Original-Recipient: ${clean(r.originalRecipient.type)}; ${clean(r.originalRecipient.address)}`);
    f.push(`Action: ${r.action}`, `Status: ${r.status}`);
    if (r.remoteMta) f.push(`Remote-MTA: dns; ${clean(r.remoteMta)}`);
    f.push(`Diagnostic-Code: ${r.remoteMta ? 'smtp' : 'x-mailyard'}; ${clean(r.diagnostic)}`);
    if (r.action === 'delayed' && input.willRetryUntil)
      f.push(`Will-Retry-Until: ${rfc5322Date(input.willRetryUntil)}`);
    return f.join('\r\n');
  });

  const parts = [
    `From: Mail Delivery System <MAILER-DAEMON@${myhostname}>`,
    `To: <${clean(original.mailFrom)}>`,
    `Subject: ${subject}`,
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${queueId}@${myhostname}>`,
    // RFC 3834 §5: automatic responses must not trigger other automatic responses
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="${boundary}"`,
    'Content-Transfer-Encoding: 8bit',
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Description: Notification',
    'Content-Type: text/plain; charset=utf-8',
    '',
    ...human,
    '',
    `--${boundary}`,
    'Content-Description: Delivery report',
    'Content-Type: message/delivery-status',
    '',
    perMessage.join('\r\n'),
    '',
    perRecipient.join('\r\n\r\n'),
    '',
    `--${boundary}`,
    'Content-Description: Undelivered Message Headers',
    'Content-Type: text/rfc822-headers',
    eightBit ? 'Content-Transfer-Encoding: 8bit' : 'Content-Transfer-Encoding: 7bit',
    '',
    '',
  ].join('\r\n');
  const message = Buffer.concat([
    Buffer.from(parts.replace(/\r?\n/g, '\r\n')),
    headers,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  const envelope: Envelope = {
    v: 1,
    queueId,
    mailFrom: '',
    recipients: [original.mailFrom],
    client: { ip: '127.0.0.1', hostname: 'localhost', helo: myhostname, tls: null, user: null },
    receivedAt: now.toISOString(),
    attempts: 0,
    body: eightBit ? '8BITMIME' : '7BIT',
    smtputf8: /[^\x00-\x7f]/.test(original.mailFrom),
    lastError: null,
  };
  return { envelope, message };
}
