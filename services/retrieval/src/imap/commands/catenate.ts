// CATENATE (RFC 4469): an APPEND whose message is put together from TEXT literals and
// IMAP URLs (RFC 5092) naming messages or parts of messages in the user's own mailboxes,
// so a client forwards an attachment without downloading it. URLs are accepted as
// Dovecot accepts them: `imap://user@host/mailbox/;UID=n...` for the logged-in user, an
// absolute path `/mailbox[;UIDVALIDITY=v]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]]`, and,
// with a mailbox selected, `;UID=n...` relative to it.
import {
  parseMime,
  parseSection,
  ParseError,
  type ArgReader,
  type Section,
  type Token,
} from '@mailyard/imap-core';
import { MessageGoneError, withCrlf, type MailFolder } from '@mailyard/mailstore';
import type { AuthedContext } from '../context.js';
import { sectionBytes } from '../fetch.js';
import { ImapReply, reply } from '../replies.js';

/**
 * Most parts one APPEND may name, over all its messages: each URL reads a message file,
 * so the count bounds the work one command can ask for.
 */
export const MAX_CATENATE_PARTS = 256;

export type CatPart = { text: Buffer } | { url: string };

/** `CATENATE (cat-part *(SP cat-part))`, after the CATENATE atom (RFC 4469 §5). */
export function parseCatenate(r: ArgReader): CatPart[] {
  const items = r.list('CATENATE parts');
  if (!items.length) throw new ParseError('CATENATE needs at least one part');
  if (items.length % 2) throw new ParseError('CATENATE parts come as TEXT literal or URL string');
  const parts: CatPart[] = [];
  for (let i = 0; i < items.length; i += 2) {
    const kind = items[i]!;
    const v: Token = items[i + 1]!;
    const name = kind.t === 'atom' ? kind.v.toUpperCase() : '';
    if (name === 'TEXT') {
      if (v.t !== 'string' || !v.literal) throw new ParseError('TEXT takes a literal');
      parts.push({ text: v.v });
    } else if (name === 'URL') {
      if (v.t === 'string') parts.push({ url: v.v.toString('utf8') });
      else if (v.t === 'atom') parts.push({ url: v.v });
      else throw new ParseError('URL takes a string');
    } else {
      throw new ParseError('CATENATE parts are TEXT or URL');
    }
  }
  return parts;
}

interface MessageUrl {
  /** null: the selected mailbox (a relative URL). */
  mailbox: string | null;
  validity: number | null;
  uid: number;
  section: Section | null;
  partial: { start: number; length: number | null } | null;
}

const badUrl = (url: string) =>
  // echoed as the client sent it, but only as printable 7-bit text that cannot end the code
  new ImapReply(
    'NO',
    `BADURL ${url.replace(/[^\x21-\x5c\x5e-\x7e]/g, '?')}`,
    'The URL names no message or part',
  );

function decode(text: string): string | null {
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}

/** The message part an IMAP URL names, or null when it is not one this server can read. */
export function parseMessageUrl(url: string, user: string): MessageUrl | null {
  let rest = url;
  const abs = /^imap:\/\/([^/@]*)@[^/]+(\/.*)$/i.exec(url);
  if (/^imap:/i.test(url)) {
    if (!abs) return null;
    // the userinfo may carry ;AUTH=: only the user's own mailboxes can be read
    const who = decode(abs[1]!.replace(/;AUTH=.*$/i, ''));
    if (who?.toLowerCase() !== user.toLowerCase()) return null;
    rest = abs[2]!;
  }
  let mailbox: string | null = null;
  let validity: number | null = null;
  if (rest.startsWith('/')) {
    const m = /^\/([^;/?][^;?]*?)(?:;UIDVALIDITY=([1-9]\d{0,9}))?(\/;.*)$/i.exec(rest);
    if (!m) return null;
    mailbox = decode(m[1]!);
    if (mailbox === null) return null;
    if (/^inbox$/i.test(mailbox)) mailbox = 'INBOX';
    validity = m[2] ? Number(m[2]) : null;
    rest = m[3]!.slice(1);
  }
  const m =
    /^;UID=([1-9]\d{0,9})(?:\/;SECTION=([^/;?]*))?(?:\/;PARTIAL=(\d{1,10})(?:\.([1-9]\d{0,9}))?)?$/i.exec(
      rest,
    );
  if (!m) return null;
  let section: Section | null = null;
  if (m[2] !== undefined) {
    const text = decode(m[2]);
    if (text === null) return null;
    try {
      section = parseSection(text, false);
    } catch {
      return null;
    }
  }
  return {
    mailbox,
    validity,
    uid: Number(m[1]),
    section,
    partial: m[3] !== undefined ? { start: Number(m[3]), length: m[4] ? Number(m[4]) : null } : null,
  };
}

async function readUrl(s: AuthedContext, url: string): Promise<Buffer> {
  const u = parseMessageUrl(url, s.user);
  if (!u) throw badUrl(url);
  let folder: MailFolder;
  if (u.mailbox === null) {
    if (!s.selected) throw badUrl(url);
    folder = s.selected.folder;
  } else {
    try {
      folder = s.mailbox.folder(u.mailbox);
    } catch {
      throw badUrl(url);
    }
    if (!(await folder.exists())) throw badUrl(url);
  }
  const snap = await folder.snapshot();
  if (u.validity !== null && u.validity !== snap.validity) throw badUrl(url);
  const m = snap.messages.find((x) => x.uid === u.uid);
  if (!m) throw badUrl(url);
  let data: Buffer;
  try {
    // the message as FETCH sends it, line ends CRLF: a URL's section and range name those bytes
    data = withCrlf(await folder.read(m));
  } catch (err) {
    if (err instanceof MessageGoneError || (err as NodeJS.ErrnoException).code === 'ENOENT')
      throw badUrl(url);
    throw err;
  }
  // RFC 4469 §5 and RFC 5092 §5: a section the message does not have names nothing
  // (Dovecot appends an empty part instead)
  let bytes = u.section ? sectionBytes(data, parseMime(data), u.section, s.enabled.rev2) : data;
  if (!bytes) throw badUrl(url);
  if (u.partial) {
    const start = Math.min(u.partial.start, bytes.length);
    const end = u.partial.length === null ? bytes.length : Math.min(bytes.length, start + u.partial.length);
    bytes = bytes.subarray(start, end);
  }
  return bytes;
}

/**
 * Puts the messages of one APPEND together, in order. `budget` is what all of them may
 * add up to (the message size limit, as for the literals of one command): past it the
 * answer is NO [TOOBIG] before more is read.
 */
export async function assemble(s: AuthedContext, messages: CatPart[][], budget: number): Promise<Buffer[]> {
  const count = messages.reduce((n, parts) => n + parts.length, 0);
  if (count > MAX_CATENATE_PARTS)
    throw reply.limit(`At most ${MAX_CATENATE_PARTS} CATENATE parts per APPEND`);
  let total = 0;
  const out: Buffer[] = [];
  for (const parts of messages) {
    const chunks: Buffer[] = [];
    for (const p of parts) {
      const b = 'text' in p ? p.text : await readUrl(s, p.url);
      total += b.length;
      if (total > budget) throw reply.tooBig();
      chunks.push(b);
    }
    out.push(Buffer.concat(chunks));
  }
  return out;
}
