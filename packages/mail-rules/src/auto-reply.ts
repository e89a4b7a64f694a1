import type { Envelope } from '@mailyard/contracts';
import { newQueueId, rfc5322Date } from '@mailyard/smtp-core';
import { addressesIn, fieldValue } from './headers.js';
import type { Vacation } from './settings.js';

type Fields = { name: string; value: string }[];

/** `from`: the user's address the reply is written from (see autoReplyDecision). */
export type ReplyDecision = { reply: true; from: string } | { reply: false; reason: string };

/**
 * Senders that are machines (RFC 3834 §2: never answer a list or a daemon), by local part:
 * MAILER-DAEMON and postmaster, noreply in its spellings, list software and its
 * -request/-owner/-bounces addresses, owner-<list>.
 */
const MACHINE_SENDER =
  /^(?:mailer-daemon|postmaster|listserv|majordomo|mailman|bounces?|no[-_.]?reply|do[-_.]?not[-_.]?reply|owner-.+|.+-(?:request|owner|bounces?))$/i;

/**
 * Whether an out-of-office reply goes to this message (RFC 3834 §2 and §3.1): never to the
 * null sender or a machine, never to a message that is itself automatic (Auto-Submitted
 * other than `no`, Precedence bulk/list/junk, X-Auto-Response-Suppress) or from a list
 * (any List-* field), never to mail the policy filed as spam or bulk, and only to mail
 * that names one of the user's addresses in To or Cc (not a Bcc, a list, an alias of many).
 * Nor to a copy forwarded under the forwarder's own envelope sender (a `Delivered-To` that
 * names the sender): the reply would go to the forwarder, who did not write it.
 * The checks on the message come first; the addresses are asked about last, and only those
 * it names. Once per sender within the vacation's days is the store's part
 * (MailRules.claimReply).
 *
 * The reply is from the address the message was delivered to (RFC 5230 §4.5, as Sieve's
 * vacation without `:from`): the envelope recipient, when it is the user's own (the
 * account, a plus-address, a personal alias), so that a user who gave out an alias does
 * not have the account behind it disclosed. A group alias or a catch-all is not the
 * user's own (a reply from it would speak for the group, or confirm that any made-up
 * address here exists): the reply is then from the own address To or Cc named, which the
 * sender already knows.
 */
export async function autoReplyDecision(input: {
  vacation: Vacation;
  now: Date;
  mailFrom: string;
  /** The envelope recipient this copy came through (RCPT TO as given). */
  recipient: string;
  /**
   * Whether an address is the user's own: the account, its plus-addresses, an alias that
   * leads to it alone (not a group's).
   */
  isOwnAddress: (address: string) => Promise<boolean>;
  fields: Fields;
  /** The policy filed it in Junk or as bulk mail. */
  junkOrBulk: boolean;
}): Promise<ReplyDecision> {
  const { vacation: v, fields } = input;
  const no = (reason: string): ReplyDecision => ({ reply: false, reason });
  if (!v.enabled) return no('off');
  const today = input.now.toISOString().slice(0, 10);
  if ((v.start && today < v.start) || (v.end && today > v.end)) return no('outside its dates');
  const sender = input.mailFrom.toLowerCase();
  if (!sender) return no('null sender');
  const local = sender.slice(0, sender.lastIndexOf('@'));
  if (MACHINE_SENDER.test(local)) return no('sender is a machine or a list');
  const auto = fieldValue(fields, 'auto-submitted');
  if (auto !== null && !/^no\b/i.test(auto)) return no('auto-submitted');
  if (/^(?:bulk|list|junk)\b/i.test(fieldValue(fields, 'precedence') ?? '')) return no('precedence');
  if (fields.some((f) => f.name.startsWith('list-'))) return no('list message');
  if (/\b(?:all|oof)\b/i.test(fieldValue(fields, 'x-auto-response-suppress') ?? ''))
    return no('auto-responses suppressed');
  if (input.junkOrBulk) return no('spam or bulk');
  // a forwarder that gives its own address as the envelope sender (our forwarding does)
  // was delivered the message first: it did not write it, and a reply would go to it, not
  // to the author (whom its first copy answered, when it came here directly too)
  if (fields.some((f) => f.name === 'delivered-to' && addressesIn([f.value]).includes(sender)))
    return no('forwarded by the sender');
  if (await input.isOwnAddress(sender)) return no('own message');
  const named = addressesIn(fields.filter((f) => f.name === 'to' || f.name === 'cc').map((f) => f.value));
  const recipient = input.recipient.toLowerCase();
  let ownRecipient: boolean | undefined;
  for (const a of named) {
    if (!(await input.isOwnAddress(a))) continue;
    if (a === recipient) return { reply: true, from: input.recipient };
    ownRecipient ??= await input.isOwnAddress(recipient);
    return { reply: true, from: ownRecipient ? input.recipient : a };
  }
  return no('not addressed to the user directly');
}

/** RFC 2047 encoded words for a header value that is not ASCII (each word at most 75 characters). */
function encodeHeader(text: string): string {
  if (/^[\x20-\x7e]*$/.test(text)) return text;
  const words: string[] = [];
  let chunk = '';
  for (const ch of text) {
    if (Buffer.byteLength(chunk + ch) > 45) {
      words.push(chunk);
      chunk = '';
    }
    chunk += ch;
  }
  if (chunk) words.push(chunk);
  return words.map((w) => `=?UTF-8?B?${Buffer.from(w).toString('base64')}?=`).join('\r\n ');
}

const msgIds = (v: string | null) => (v ?? '').match(/<[^<>\s]+>/g) ?? [];

/**
 * The out-of-office reply (RFC 3834 §3): from the user's address (`from`, which
 * autoReplyDecision chose) to the original sender,
 * `Auto-Submitted: auto-replied`, `In-Reply-To`/`References` of the original, and an
 * envelope with the null sender (§3.3), so that nothing answers it and a failure to
 * deliver it bounces nowhere.
 */
export function buildAutoReply(input: {
  vacation: Vacation;
  from: string;
  mailFrom: string;
  fields: Fields;
  myhostname: string;
  now?: Date;
}): { envelope: Envelope; message: Buffer } {
  const now = input.now ?? new Date();
  const queueId = newQueueId(now.getTime());
  const original = fieldValue(input.fields, 'subject') ?? '';
  // RFC 3834 §3.1.5: "Auto:" and the original subject, unless the user wrote one
  const subject = input.vacation.subject.trim() || `Auto: ${original || 'out of office'}`.slice(0, 300);
  const messageId = msgIds(fieldValue(input.fields, 'message-id'))[0];
  const refs = [...msgIds(fieldValue(input.fields, 'references') ?? fieldValue(input.fields, 'in-reply-to'))];
  if (messageId) refs.push(messageId);
  const text = input.vacation.body.replace(/\r?\n/g, '\r\n').replace(/(\r\n)?$/, '\r\n');
  const plain = /^[\x20-\x7e\r\n\t]*$/.test(text) && text.split('\r\n').every((l) => l.length <= 900);
  const body = plain
    ? text
    : (
        Buffer.from(text)
          .toString('base64')
          .match(/.{1,76}/g) ?? []
      ).join('\r\n') + '\r\n';
  const head = [
    `From: <${input.from}>`,
    `To: <${input.mailFrom}>`,
    `Subject: ${encodeHeader(subject)}`,
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${queueId}@${input.myhostname}>`,
    ...(messageId ? [`In-Reply-To: ${messageId}`] : []),
    // the last ten are enough to thread it (RFC 5322 §3.6.4 allows trimming)
    ...(refs.length ? [`References: ${refs.slice(-10).join('\r\n ')}`] : []),
    'Auto-Submitted: auto-replied',
    // Exchange and Outlook's own convention, so their out-of-office does not answer ours
    'X-Auto-Response-Suppress: All',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    `Content-Transfer-Encoding: ${plain ? '7bit' : 'base64'}`,
  ];
  const message = Buffer.from(`${head.join('\r\n')}\r\n\r\n${body}`);
  const envelope: Envelope = {
    v: 1,
    queueId,
    mailFrom: '',
    recipients: [input.mailFrom],
    client: { ip: '127.0.0.1', hostname: 'localhost', helo: input.myhostname, tls: null, user: null },
    receivedAt: now.toISOString(),
    attempts: 0,
    body: '7BIT',
    smtputf8: /[^\x00-\x7f]/.test(input.mailFrom),
    lastError: null,
  };
  return { envelope, message };
}
