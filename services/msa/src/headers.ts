import addressparser from 'nodemailer/lib/addressparser';

const CRLF = Buffer.from('\r\n');

/** One header field exactly as it arrived: name, and the raw bytes including folded lines and the final CRLF. */
export interface HeaderField {
  /** Field name as written (empty for a line that is not a field, kept as it was). */
  name: string;
  raw: Buffer;
}

export interface SplitMessage {
  fields: HeaderField[];
  /** Everything after the blank line that ends the header section (empty when there is none). */
  body: Buffer;
  /** Whether the message had the blank line separating header and body. */
  hasSeparator: boolean;
}

/**
 * Splits a message (CRLF line endings) into its header fields and body without
 * touching a byte: joining `raw` of every field, CRLF and the body gives the input back.
 */
export function splitMessage(message: Buffer): SplitMessage {
  const fields: HeaderField[] = [];
  // the field being read: where it starts, and its name; copied out once it is whole
  // (a field of many folded lines is not copied again with each)
  let start = -1;
  let name = '';
  const close = (end: number) => {
    if (start !== -1) fields.push({ name, raw: Buffer.from(message.subarray(start, end)) });
  };
  let pos = 0;
  while (pos < message.length) {
    const eol = message.indexOf(CRLF, pos);
    const lineEnd = eol === -1 ? message.length : eol + 2;
    if (eol === pos) {
      // RFC 5322 §2.1: the first empty line ends the header section
      close(pos);
      return { fields, body: message.subarray(pos + 2), hasSeparator: true };
    }
    const first = message[pos];
    // RFC 5322 §2.2.3: a folded continuation line belongs to the field above
    if (!((first === 0x20 || first === 0x09) && start !== -1)) {
      close(pos);
      const line = message.subarray(pos, lineEnd).toString('latin1');
      name = /^([\x21-\x39\x3b-\x7e]+)[ \t]*:/.exec(line)?.[1] ?? '';
      start = pos;
    }
    pos = lineEnd;
  }
  close(pos);
  return { fields, body: Buffer.alloc(0), hasSeparator: false };
}

export function joinMessage(m: SplitMessage): Buffer {
  const parts = m.fields.map((f) => f.raw);
  if (m.hasSeparator || m.body.length) parts.push(CRLF, m.body);
  return Buffer.concat(parts);
}

/** The unfolded value of a field (after the colon), as UTF-8 (RFC 6532 allows UTF-8 in headers). */
export function fieldValue(f: HeaderField): string {
  const text = f.raw.toString('utf8');
  return text
    .slice(text.indexOf(':') + 1)
    .replace(/\r\n(?=[ \t])/g, '')
    .replace(/\r\n$/, '')
    .trim();
}

export function fieldsNamed(m: SplitMessage, name: string): HeaderField[] {
  const n = name.toLowerCase();
  return m.fields.filter((f) => f.name.toLowerCase() === n);
}

/** Every mailbox address in an address-list header value (groups flattened; display names dropped). */
export function mailboxAddresses(value: string): string[] {
  const out: string[] = [];
  const walk = (list: ReturnType<typeof addressparser>) => {
    for (const a of list) {
      if ('group' in a && Array.isArray(a.group)) walk(a.group);
      else if ('address' in a && a.address) out.push(a.address);
    }
  };
  walk(addressparser(value));
  return out;
}

export interface FixupOptions {
  /** Date: value to add when missing. */
  date: string;
  /** Message-ID: value to add when missing (with angle brackets). */
  messageId: string;
  /** From: value to add when missing (the envelope sender). */
  from: string;
}

export interface FixupResult {
  message: Buffer;
  /** Names of the fields added. */
  added: string[];
  /** How many Bcc fields were removed. */
  removedBcc: number;
}

/**
 * The fix-ups of RFC 6409 §8 a submission server makes: Date (§8.2) and Message-ID
 * (§8.3) when missing, and From when missing (RFC 5322 §3.6 requires one; Postfix's
 * always_add_missing_headers). Bcc is removed (RFC 5322 §3.6.3: the other recipients
 * must not see who was blind-copied). Every other field is kept byte for byte, in
 * its place; added fields go at the end of the header section.
 */
export function applySubmissionFixups(input: SplitMessage, opts: FixupOptions): FixupResult {
  const added: string[] = [];
  const kept = input.fields.filter((f) => f.name.toLowerCase() !== 'bcc');
  const removedBcc = input.fields.length - kept.length;
  const extra: HeaderField[] = [];
  const has = (n: string) => kept.some((f) => f.name.toLowerCase() === n);
  const add = (name: string, value: string) => {
    extra.push({ name, raw: Buffer.from(`${name}: ${value}\r\n`) });
    added.push(name);
  };
  if (!has('from')) add('From', opts.from);
  if (!has('date')) add('Date', opts.date);
  if (!has('message-id')) add('Message-ID', opts.messageId);
  // a message that was all header and no blank line gets one, so the added fields stay in the header
  const message = joinMessage({
    fields: [...kept, ...extra],
    body: input.body,
    hasSeparator: input.hasSeparator || extra.length > 0 || removedBcc > 0,
  });
  return { message, added, removedBcc };
}
