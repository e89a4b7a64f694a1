// Writing mail: the message built with nodemailer's MailComposer (only from values we
// hold in memory: never a path or URL it would read itself), submitted through the msa
// with the service login acting for the user, and kept in Sent or Drafts over IMAP.
import { randomBytes } from 'node:crypto';
import nodemailer from 'nodemailer';
import addressparser from 'nodemailer/lib/addressparser';
import MailComposer from 'nodemailer/lib/mail-composer';
import type { Logger } from '@mailyard/observability';
import type { SubmitTarget } from './context.js';
import { ApiError, errors, UpstreamError } from './errors.js';
import type { Address } from './api-types.js';
import { htmlToText, sanitizeComposeHtml } from './sanitize.js';

export interface OutgoingAttachment {
  filename: string;
  contentType: string;
  content: Buffer;
}

export interface Outgoing {
  from: Address;
  to: Address[];
  cc: Address[];
  bcc: Address[];
  subject: string;
  text: string;
  /** Rich text from the editor (sanitised again here), or null for plain text. */
  html: string | null;
  attachments: OutgoingAttachment[];
  inReplyTo: string | null;
  references: string | null;
}

/** The message a reply or forward answers: marked \\Answered or $Forwarded once it is sent. */
export interface Origin {
  folder: string;
  uid: number;
  kind: 'reply' | 'forward';
  /**
   * The folder's UIDVALIDITY when the message was read: a UID names the same message only
   * as long as it holds (RFC 9051 §2.3.1.1), and a folder deleted and made again numbers
   * its messages anew. Null in a draft saved before it was kept: such an origin is not marked.
   */
  uidValidity: number | null;
}

/**
 * Where a draft keeps its origin, for the send after it is reopened: written only into
 * drafts (a message being sent is built anew, without it), so it never leaves the store.
 * The folder's name as base64url of its UTF-8, so that any name fits an unfolded header.
 */
export const ORIGIN_HEADER = 'X-Mailyard-Origin';

const originValue = (o: Origin): string =>
  `${o.kind}; uid=${o.uid}; ` +
  (o.uidValidity === null ? '' : `uidvalidity=${o.uidValidity}; `) +
  `folder=${Buffer.from(o.folder, 'utf8').toString('base64url')}`;

/** A UID or UIDVALIDITY: a 32-bit number other than 0 (RFC 9051 §2.3.1.1). */
const nz32 = (n: number) => n > 0 && n <= 0xffffffff;

/**
 * A draft's origin from its X-Mailyard-Origin value; null when there is none, or it is not
 * ours. A draft saved before the header kept the folder's UIDVALIDITY has none (null).
 */
export function parseOrigin(value: string | null): Origin | null {
  const m =
    /^(reply|forward); uid=([1-9]\d{0,9}); (?:uidvalidity=([1-9]\d{0,9}); )?folder=([A-Za-z0-9_-]+)$/.exec(
      value ?? '',
    );
  if (!m) return null;
  const uid = Number(m[2]);
  const uidValidity = m[3] === undefined ? null : Number(m[3]);
  const folder = Buffer.from(m[4]!, 'base64url').toString('utf8');
  if (!nz32(uid) || (uidValidity !== null && !nz32(uidValidity)) || !folder || folder.length > 1000)
    return null;
  return { kind: m[1] as Origin['kind'], uid, uidValidity, folder };
}

/** A plausible mailbox address: local@domain, no spaces or brackets (the msa checks the rest). */
const ADDRESS = /^[^\s@<>()[\]",;:\\]+@[^\s@<>()[\]",;:\\]+$/;

/**
 * Addresses as typed ("Ann <ann@x>, bob@y"); a malformed one is a 400 naming it.
 *
 * Addresses with only spaces or line breaks between them ("ann@x bob@y", a column pasted)
 * are a recipient each, as Gmail and Thunderbird take them: addressparser makes the first
 * the address and the others its display name, and the mail would go to the first alone.
 * Words and addresses so mixed that no one can tell which name is whose are a 400 asking
 * for the commas. An address in <>, a name in quotes or a comment stays as written.
 */
export function parseAddressList(text: string, field: string): Address[] {
  const out: Address[] = [];
  const flat = (list: ReturnType<typeof addressparser>) => {
    for (const a of list) {
      if ('group' in a && a.group) flat(a.group);
      else if (a.address || a.name) {
        const address = (a.address ?? '').trim();
        if (!ADDRESS.test(address))
          throw errors.badRequest(`${field}: not an address: ${a.address || a.name}`);
        const name = (a.name ?? '').trim();
        const asWritten = [`<${address}>`, `"${name}"`, `(${name})`].some((s) => text.includes(s));
        if (name.includes('@') && !asWritten) {
          const words = name.split(/\s+/);
          const more = words.filter((w) => w.includes('@'));
          const bad = more.find((w) => !ADDRESS.test(w));
          if (bad) throw errors.badRequest(`${field}: not an address: ${bad}`);
          if (more.length < words.length)
            throw errors.badRequest(`${field}: put a comma between ${[address, ...more].join(' and ')}`);
          out.push({ name: '', address }, ...more.map((w) => ({ name: '', address: w })));
          continue;
        }
        out.push({ name, address });
      }
    }
  };
  flat(addressparser(text ?? ''));
  return out;
}

/**
 * A header's text on one line. RFC 5322 §2.2: a field body holds CR and LF only where it
 * is folded, which is nodemailer's to do; a value holding them (typed, or taken from an
 * original whose encoded word decodes to them) would be written as an encoded word that
 * decodes to a line break again in the reader's hands. Each run of control characters
 * and line separators becomes one space.
 */
export const oneLine = (text: string): string =>
  text.replace(/[\u0000-\u001f\u007f\u0085\u2028\u2029]+/g, ' ').trim();

/** RFC 5322 §3.6.4's msg-id: "<" id-left "@" id-right ">", nothing blank or control in it. */
const MSG_ID = /<[^<>@\s\u0000-\u001f\u007f]+@[^<>@\s\u0000-\u001f\u007f]+>/g;

/**
 * The msg-ids of an In-Reply-To or References value, one space apart (an original's
 * header may have been folded, or hold comments, words or encoded words: left out);
 * null when none is left.
 */
export function msgIds(value: string | null): string | null {
  const ids = value?.match(MSG_ID);
  return ids?.length ? ids.join(' ') : null;
}

/** An attachment's file name: no control characters or path separators, 200 characters at most. */
export const attachmentName = (name: string): string =>
  name.replace(/[\u0000-\u001f\u007f\u0085\u2028\u2029/\\]/g, '_').slice(0, 200) || 'attachment';

/** An attachment's media type as `type/subtype`, anything else application/octet-stream. */
export const attachmentType = (type: string): string =>
  /^[\w.+-]+\/[\w.+-]+$/.test(type) ? type.toLowerCase() : 'application/octet-stream';

/** Our Message-ID for a message we write: random, at the sender's domain. */
export function newMessageId(from: string): string {
  const domain = from.split('@')[1] || 'localhost';
  return `<${randomBytes(12).toString('base64url')}@${domain}>`;
}

/**
 * The message's RFC 5322 bytes. Bcc stays in (for the copy in Sent; the msa removes it
 * before sending). A draft carries the message it answers (`origin`) in a header of ours.
 */
export async function buildMessage(
  m: Outgoing,
  opts: { messageId: string; date: Date; draft?: { origin: Origin | null } },
): Promise<Buffer> {
  const html = m.html === null ? null : sanitizeComposeHtml(m.html);
  // every header value on one line, whoever wrote it: the user, or the original's sender
  const named = (a: Address): Address => ({ name: oneLine(a.name), address: a.address });
  const inReplyTo = msgIds(m.inReplyTo);
  const references = msgIds(m.references);
  const node = new MailComposer({
    from: named(m.from),
    to: m.to.map(named),
    cc: m.cc.map(named),
    bcc: m.bcc.map(named),
    subject: oneLine(m.subject),
    text: html === null ? m.text : m.text || htmlToText(html),
    ...(html === null ? {} : { html }),
    attachments: m.attachments.map((a) => ({
      filename: attachmentName(a.filename),
      contentType: attachmentType(a.contentType),
      content: a.content,
    })),
    messageId: opts.messageId,
    date: opts.date,
    ...(inReplyTo ? { inReplyTo } : {}),
    ...(references ? { references } : {}),
    headers: {
      'User-Agent': 'Mailyard webmail',
      ...(opts.draft ? { 'X-Mailyard-Draft': 'yes' } : {}),
      ...(opts.draft?.origin ? { [ORIGIN_HEADER]: originValue(opts.draft.origin) } : {}),
    },
    // nothing the composer would fetch by itself: no file paths, no URLs, no data: images to attach
    disableFileAccess: true,
    disableUrlAccess: true,
  }).compile();
  node.keepBcc = true;
  return node.build();
}

export interface RefusedRecipient {
  address: string;
  reply: string;
}

/**
 * The msa's replies to the envelope, read from nodemailer's transaction log: which
 * recipients it refused, and whether it ended the session (421) before the message went.
 * Replies come in the order of the commands, pipelined too (RFC 2920 §3.1), so each
 * answers the oldest command still waiting for one (the greeting and the reply to the
 * message itself answer none). nodemailer names refused recipients only with a message
 * that went, never in an error.
 */
function envelopeLog() {
  /** The commands waiting for their replies: a RCPT TO's address, DATA, or any other. */
  const waiting: { rcpt?: string; data?: true }[] = [];
  const refused: RefusedRecipient[] = [];
  let inMessage = false;
  let endedInEnvelope = false;
  const noop = () => undefined;
  const debug = (entry: { tnx?: string }, line: unknown) => {
    const text = String(line);
    if (entry.tnx === 'client') {
      const rcpt = /^RCPT TO:<([^>]*)>/i.exec(text)?.[1];
      waiting.push(rcpt !== undefined ? { rcpt } : /^DATA$/i.test(text) ? { data: true } : {});
    }
    if (entry.tnx !== 'server') return;
    const command = waiting.shift() ?? {};
    // RFC 5321 §3.8: a 421 may come in place of any reply, and ends the session
    if (text.startsWith('421')) endedInEnvelope ||= !inMessage;
    else if (command.data && text.startsWith('3')) inMessage = true;
    else if (command.rcpt !== undefined && /^[45]/.test(text))
      refused.push({ address: command.rcpt, reply: text });
  };
  return {
    logger: { trace: noop, debug, info: noop, warn: noop, error: noop, fatal: noop },
    refused,
    /** Whether the msa ended the session before the message was sent. */
    endedInEnvelope: () => endedInEnvelope,
    /** Whether the msa took the message's DATA command (the message may have gone). */
    inMessage: () => inMessage,
  };
}

/**
 * RFC 5321 §4.5.3.1.10: a 452 to a RCPT is the msa's limit of recipients per message
 * (4.5.3, or no enhanced code at all), not a refusal of the recipient: the client sends
 * the message to the rest in a further transaction. A 452 with another enhanced code
 * (4.2.2 mailbox full, 4.3.1 no room) is the recipient's, and stays a refusal.
 */
const overRecipientLimit = (reply: string): boolean =>
  /^452(?:[ -]4\.5\.3\b|[ -](?![245]\.\d)|$)/.test(reply);

/** The recipients of a transaction's envelope before the first the msa had no room for. */
function takenPerTransaction(to: string[], refused: RefusedRecipient[]): number {
  const over = new Set(refused.filter((r) => overRecipientLimit(r.reply)).map((r) => r.address));
  const at = to.findIndex((a) => over.has(a));
  return at < 0 ? to.length : at;
}

/**
 * Submits through the msa (submission over TLS), authenticated with the service login
 * and authorised as the user (SASL PLAIN authzid): the msa applies every rule it applies
 * to a desktop client, sender addresses included. `signal` abandons the submission: its
 * connection is closed, and the message is not sent unless the msa had it whole already.
 *
 * Recipients beyond the msa's limit per message (452 4.5.3) get the message in further
 * transactions of as many recipients as the first took, until all are taken. The msa
 * counts each 452 toward its hard error limit: a first transaction it ended over them (so
 * sent to no one) is made again with only as many as it took. Once one transaction sent
 * the message, a later one that fails names its recipients as refused rather than failing
 * the whole: the message has left. Nor does `signal` stop the later ones (their recipients
 * would get nothing while the user was told it was sent): they end by their own SMTP
 * timeouts. `onProgress` is called once the first transaction is confirmed, and after each
 * further one, with the recipients still to be sent to.
 */
export async function submit(
  target: SubmitTarget,
  account: string,
  envelope: { from: string; to: string[] },
  raw: Buffer,
  opts: { signal?: AbortSignal; onProgress?: (pending: string[]) => void; logger?: Logger } = {},
): Promise<{ response: string; refused: RefusedRecipient[] }> {
  let first;
  let per = envelope.to.length;
  try {
    first = await transaction(target, account, envelope, raw, opts.signal);
  } catch (err) {
    const ended = err instanceof ApiError ? (err.extra.refused as RefusedRecipient[] | undefined) : undefined;
    per = ended ? takenPerTransaction(envelope.to, ended) : 0;
    if (!ended || !per || per === envelope.to.length) throw err;
    first = await transaction(
      target,
      account,
      { ...envelope, to: envelope.to.slice(0, per) },
      raw,
      opts.signal,
    );
    first.refused.push(...envelope.to.slice(per).map((address) => ({ address, reply: '452 4.5.3' })));
  }
  per = Math.min(per, takenPerTransaction(envelope.to, first.refused));
  let { response } = first;
  const refused = first.refused.filter((r) => !overRecipientLimit(r.reply));
  let pending = first.refused.filter((r) => overRecipientLimit(r.reply)).map((r) => r.address);
  opts.onProgress?.(pending);
  while (pending.length) {
    const to = pending.slice(0, per);
    let next;
    try {
      next = await transaction(target, account, { from: envelope.from, to }, raw);
    } catch (err) {
      // the msa takes no more of them, and would not in a transaction after this one either
      const notSent = [...to, ...pending.slice(per)];
      refused.push(...notReached(notSent, err));
      opts.logger?.warn(
        { account, recipients: notSent.length, code: (err as { code?: string }).code },
        'a further transaction past the msa recipient limit failed',
      );
      opts.onProgress?.([]);
      break;
    }
    response = next.response;
    refused.push(...next.refused.filter((r) => !overRecipientLimit(r.reply)));
    // each transaction takes at least one (nodemailer fails one that takes none)
    const again = next.refused.filter((r) => overRecipientLimit(r.reply)).map((r) => r.address);
    opts.logger?.info(
      { account, recipients: to.length, refused: next.refused.length - again.length, again: again.length },
      'sent in a further transaction past the msa recipient limit',
    );
    pending = [...again, ...pending.slice(per)];
    opts.onProgress?.(pending);
  }
  return { response, refused };
}

/** The recipients of a further transaction that failed, each with the reply that says why. */
function notReached(to: string[], err: unknown): RefusedRecipient[] {
  const named = new Map(
    err instanceof ApiError
      ? ((err.extra.refused as RefusedRecipient[] | undefined) ?? []).map((r) => [r.address, r.reply])
      : [],
  );
  const response = (err as { cause?: { response?: string } }).cause?.response;
  const reply =
    err instanceof ApiError
      ? err.message
      : response
        ? `not sent: ${response}`
        : 'not sent: the mail server could not be reached';
  return to.map((address) => ({ address, reply: named.get(address) ?? reply }));
}

/** One SMTP transaction: the message to `envelope.to`, on a connection of its own. */
async function transaction(
  target: SubmitTarget,
  account: string,
  envelope: { from: string; to: string[] },
  raw: Buffer,
  signal?: AbortSignal,
): Promise<{ response: string; refused: RefusedRecipient[] }> {
  const plain = Buffer.from([account, target.service.name, target.service.password].join('\0')).toString(
    'base64',
  );
  const log = envelopeLog();
  const transport = nodemailer.createTransport({
    host: target.host,
    port: target.port,
    secure: true,
    tls: {
      servername: target.servername,
      rejectUnauthorized: target.rejectUnauthorized,
      minVersion: 'TLSv1.2',
      ...(target.ca ? { ca: target.ca } : {}),
    },
    auth: { type: 'custom', method: 'PLAIN', user: target.service.name, pass: target.service.password },
    customAuth: {
      PLAIN: async (ctx) => {
        const r = await ctx.sendCommand(`AUTH PLAIN ${plain}`);
        if (r.status !== 235)
          throw Object.assign(new Error(r.text ?? 'AUTH refused'), { responseCode: r.status });
      },
    },
    logger: log.logger,
    transactionLog: true,
    connectionTimeout: 15_000,
    greetingTimeout: 15_000,
    socketTimeout: 120_000,
  });
  try {
    const info = await transport.sendMail({ envelope, raw, ...(signal ? { signal } : {}) });
    // some recipients refused at RCPT, the others accepted: sent, to those only
    const replies = new Map(
      (info.rejectedErrors ?? []).map((e) => [
        (e as { recipient?: string }).recipient ?? '',
        (e as { response?: string }).response ?? e.message,
      ]),
    );
    const refused = (info.rejected ?? []).map((address) => ({
      address,
      reply: replies.get(address) ?? 'refused',
    }));
    return { response: info.response, refused };
  } catch (err) {
    const e = err as { responseCode?: number; response?: string; message: string };
    // the msa ended the session after refusing recipients (its hard error limit, as
    // Postfix's smtpd_hard_error_limit): the message did not go to anyone, and the user
    // must learn whom to remove, not that the service is down. The msa may close the
    // connection without a 421 that arrives: recipients past its limit say why it did.
    if (
      log.refused.length &&
      (log.endedInEnvelope() || (!log.inMessage() && log.refused.some((r) => overRecipientLimit(r.reply))))
    )
      throw errors.recipientsRefused(log.refused);
    // a permanent refusal is the user's to read (553 not your address, 550 no such user...)
    if (e.responseCode && e.responseCode >= 500 && e.responseCode !== 535)
      throw errors.sendRefused(e.response ?? e.message);
    throw new UpstreamError('submission failed', err);
  } finally {
    transport.close();
  }
}
