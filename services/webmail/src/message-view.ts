// Reading one message: its structure from BODYSTRUCTURE, only the text parts and the
// inline images downloaded (attachments stay on the server until asked for), the policy
// reasons it carries, and its HTML sanitised (sanitize.ts).
import type { ImapFlow, MessageStructureObject } from 'imapflow';
import { ORIGIN_HEADER, parseOrigin, type Origin } from './compose.js';
import { errors } from './errors.js';
import type { AttachmentInfo, MessageView, PolicyReason } from './api-types.js';
import { flagsOf, messageDate, toAddresses } from './mailbox.js';
import { htmlToText, sanitizeMailHtml, type SanitizedHtml } from './sanitize.js';

export interface ParsedStructure {
  html: string[];
  text: string[];
  attachments: AttachmentInfo[];
  /** Content-ID -> part, of inline images. */
  cids: Map<string, { part: string; type: string; size: number }>;
}

/**
 * An attachment's name as the sender wrote it, as well-formed text: a name in UTF-16
 * (RFC 2047 allows any charset) may decode to half of a surrogate pair, which no URL
 * encoding or header can carry; that half becomes U+FFFD as any decoder would show it.
 */
const filenameOf = (n: MessageStructureObject) =>
  (n.dispositionParameters?.filename ?? n.parameters?.name ?? '').replace(/[\uD800-\uDFFF]/gu, '\uFFFD');

/**
 * A part's size as the file's own, as the user knows it: BODYSTRUCTURE gives the size as
 * stored, and base64 stores 78 octets (76 characters and their CRLF) for every 57.
 */
const fileSize = (n: MessageStructureObject) =>
  n.encoding?.toLowerCase() === 'base64' ? Math.floor(((n.size ?? 0) * 57) / 78) : (n.size ?? 0);

/** Walks BODYSTRUCTURE: which parts are the body (HTML and text) and which are attachments. */
export function parseStructure(root: MessageStructureObject): ParsedStructure {
  const out: ParsedStructure = { html: [], text: [], attachments: [], cids: new Map() };
  const walk = (n: MessageStructureObject, inAlternative: boolean) => {
    const type = (n.type || 'text/plain').toLowerCase();
    if (type.startsWith('multipart/')) {
      // RFC 2046 §5.1.1: without a boundary no part can be told apart (the store lists one
      // empty part, as Dovecot does); its body is shown as it stands, as desktop clients
      // show it, rather than nothing. The body of a multipart that is a part is BODY[part].
      if (n.parameters?.boundary === undefined) {
        out.text.push(n.part ?? 'TEXT');
        return;
      }
      const alt = type === 'multipart/alternative';
      const children = n.childNodes ?? [];
      if (alt) {
        // RFC 2046 §5.1.4: the last alternative is the richest; take one HTML and one text
        const html = [...children].reverse().find((c) => (c.type || '').toLowerCase() === 'text/html');
        const text = [...children].reverse().find((c) => (c.type || '').toLowerCase() === 'text/plain');
        const richest = children.at(-1);
        for (const c of children) {
          if (c === html || c === text) walk(c, true);
          else if (c === richest && !html && !text) walk(c, true);
          else if ((c.type || '').toLowerCase().startsWith('multipart/')) walk(c, true);
        }
        return;
      }
      for (const c of children) walk(c, inAlternative);
      return;
    }
    const part = n.part ?? '1';
    const filename = filenameOf(n);
    const attachment = n.disposition?.toLowerCase() === 'attachment';
    const size = fileSize(n);
    if (!attachment && !filename && (type === 'text/html' || type === 'text/plain')) {
      (type === 'text/html' ? out.html : out.text).push(part);
      return;
    }
    const cid = n.id?.replace(/^<|>$/g, '');
    const inline = !attachment && !!cid && type.startsWith('image/');
    if (inline && cid) out.cids.set(cid, { part, type, size });
    out.attachments.push({
      part,
      filename: filename || (type === 'message/rfc822' ? 'message.eml' : `part-${part}`),
      type,
      size,
      inline,
    });
  };
  walk(root, false);
  return out;
}

/** X-Mailyard-Policy: `junk; rspamd=spam (score 12.3); spf=fail (...)`. */
export function parsePolicyHeader(value: string): { verdict: string; reasons: PolicyReason[] } | null {
  const v = value.replace(/\r?\n[ \t]+/g, ' ').trim();
  if (!v) return null;
  const [verdict, ...items] = v.split(/;\s*/);
  const reasons: PolicyReason[] = [];
  for (const item of items) {
    const m = /^([\w.:-]+)=(\S+?)(?:\s+\((.*)\))?$/.exec(item.trim());
    if (m) reasons.push({ check: m[1]!, result: m[2]!, detail: m[3] ?? null });
    else if (item.trim() && item.trim() !== 'no checks fired')
      reasons.push({ check: item.trim(), result: '', detail: null });
  }
  return { verdict: (verdict ?? '').toLowerCase(), reasons };
}

/** A header's first value from a HEADER.FIELDS answer, unfolded. */
export function headerValue(block: string, name: string): string | null {
  const m = new RegExp(`^${name}:[ \\t]*((?:.*)(?:\\r?\\n[ \\t].*)*)`, 'im').exec(block);
  return m ? m[1]!.replace(/\r?\n[ \t]+/g, ' ').trim() : null;
}

/** Largest text part read (a bigger body is cut there). */
const TEXT_LIMIT = 4 * 1024 * 1024;
/** Inline images become data: URIs up to this many bytes in all. */
const INLINE_LIMIT = 10 * 1024 * 1024;

/**
 * WHATWG's windows-1252 for 0x80-0x9F (the rest is ISO-8859-1): Node's TextDecoder reads
 * these as Latin-1's control characters, where mail from Windows has € and curly quotes.
 */
const WINDOWS_1252_C1 =
  '\u20ac\u0081\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\u008d\u017d\u008f' +
  '\u0090\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u009d\u017e\u0178';

const decodeWindows1252 = (bytes: Buffer) =>
  bytes.toString('latin1').replace(/[\u0080-\u009f]/g, (c) => WINDOWS_1252_C1[c.charCodeAt(0) - 0x80]!);

/** The charset an HTML document names in its first 1024 bytes (`<meta charset>` or http-equiv). */
function metaCharset(bytes: Buffer): string | null {
  const head = bytes.subarray(0, 1024).toString('latin1');
  for (const m of head.matchAll(/<meta\b[^>]*>/gi)) {
    const label = /\bcharset\s*=\s*["']?\s*([\w.:-]+)/i.exec(m[0])?.[1];
    if (label) return label;
  }
  return null;
}

/** Text in `label`'s encoding, or null when there is no such encoding. */
function decodeAs(bytes: Buffer, label: string): string | null {
  let decoder: InstanceType<typeof TextDecoder>;
  try {
    decoder = new TextDecoder(label);
  } catch {
    return null;
  }
  // HTML §13.2.3.2: a document cannot name UTF-16 for bytes already read as ASCII
  if (decoder.encoding.startsWith('utf-16')) return null;
  return decoder.encoding === 'windows-1252' ? decodeWindows1252(bytes) : decoder.decode(bytes);
}

/**
 * The bytes' text when they are UTF-8, else null. A character cut off at their end (a part
 * downloaded up to TEXT_LIMIT) is left out, not taken for a sign of another charset.
 */
const asUtf8 = (bytes: Buffer): string | null => {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes, { stream: true });
  } catch {
    return null;
  }
};

/**
 * A text part's text. imapflow converts a part whose charset it knows to UTF-8 (and says
 * utf-8 then); one it does not know is tried here. One that names none (RFC 2045 §5.2 says
 * US-ASCII, but 8-bit text without a label is common), US-ASCII or a charset nobody knows
 * is read as a browser reads it: HTML by its own `<meta charset>`, else UTF-8 when the
 * bytes are UTF-8, else windows-1252 (WHATWG Encoding's reading of ISO-8859-1 and US-ASCII).
 */
export function decodeTextPart(bytes: Buffer, charset: string | undefined, html: boolean): string {
  const label = charset?.trim() ?? '';
  if (/^utf-?8$/i.test(label)) return bytes.toString('utf8');
  const byLabel = label && !/^(us-?)?ascii$/i.test(label) ? decodeAs(bytes, label) : null;
  if (byLabel !== null) return byLabel;
  const declared = html ? metaCharset(bytes) : null;
  const byMeta = declared === null ? null : decodeAs(bytes, declared);
  if (byMeta !== null) return byMeta;
  return asUtf8(bytes) ?? decodeWindows1252(bytes);
}

async function downloadText(c: ImapFlow, uid: number, part: string, html: boolean): Promise<string> {
  const res = await c.download(String(uid), part, { uid: true, maxBytes: TEXT_LIMIT });
  if (!res.content) return '';
  const chunks: Buffer[] = [];
  for await (const chunk of res.content) chunks.push(chunk as Buffer);
  return decodeTextPart(Buffer.concat(chunks), res.meta.charset, html);
}

export interface LoadedMessage {
  view: Omit<MessageView, 'privacy' | 'html'>;
  /** The raw (unsanitised) HTML, for sanitising with or without remote content. */
  rawHtml: string | null;
  inline: Map<string, string>;
  structure: ParsedStructure;
  /** The message a draft answers or forwards, as the draft keeps it (null in any other). */
  origin: Origin | null;
}

/** Fetches a message of the selected folder; throws noSuchMessage when the UID is not there. */
export async function loadMessage(c: ImapFlow, folder: string, uid: number): Promise<LoadedMessage> {
  const m = await c.fetchOne(
    String(uid),
    {
      uid: true,
      flags: true,
      envelope: true,
      bodyStructure: true,
      internalDate: true,
      headers: ['x-mailyard-policy', 'list-unsubscribe', 'references', ORIGIN_HEADER.toLowerCase()],
    },
    { uid: true },
  );
  if (!m || m.uid !== uid || !m.bodyStructure) throw errors.noSuchMessage();
  if (!c.mailbox) throw errors.noSuchFolder();
  const uidValidity = Number(c.mailbox.uidValidity);
  const structure = parseStructure(m.bodyStructure);
  const htmlParts = await Promise.all(structure.html.map((p) => downloadText(c, uid, p, true)));
  const textParts = await Promise.all(structure.text.map((p) => downloadText(c, uid, p, false)));
  const inline = new Map<string, string>();
  const inlined = new Set<string>();
  const wanted = [...structure.cids].filter(([, v]) => v.size <= INLINE_LIMIT);
  if (htmlParts.length && wanted.length) {
    let budget = INLINE_LIMIT;
    const parts = await c.downloadMany(
      String(uid),
      wanted.map(([, v]) => v.part),
      { uid: true },
    );
    for (const [cid, info] of wanted) {
      const content = parts[info.part]?.content;
      if (!content || content.length > budget || !/^image\/(png|jpe?g|gif|webp|bmp)$/.test(info.type))
        continue;
      budget -= content.length;
      inline.set(cid, `data:${info.type};base64,${content.toString('base64')}`);
      inlined.add(info.part);
    }
  }
  const env = m.envelope;
  const headers = m.headers?.toString('utf8') ?? '';
  const policyHeader = headerValue(headers, 'x-mailyard-policy');
  const rawHtml = htmlParts.length ? htmlParts.join('\n<hr>\n') : null;
  const text = textParts.length ? textParts.join('\n\n') : rawHtml ? htmlToText(rawHtml) : '';
  return {
    view: {
      uid,
      folder,
      uidValidity,
      subject: env?.subject ?? '',
      from: toAddresses(env?.from),
      to: toAddresses(env?.to),
      cc: toAddresses(env?.cc),
      bcc: toAddresses(env?.bcc),
      replyTo: toAddresses(env?.replyTo),
      date: messageDate(env?.date, m.internalDate),
      flags: flagsOf(m.flags),
      messageId: env?.messageId ?? null,
      inReplyTo: env?.inReplyTo ?? null,
      references: headerValue(headers, 'references'),
      text,
      attachments: structure.attachments.map((a) => ({ ...a, inline: inlined.has(a.part) })),
      policy: policyHeader ? parsePolicyHeader(policyHeader) : null,
      listUnsubscribe: headerValue(headers, 'list-unsubscribe'),
    },
    rawHtml,
    inline,
    structure,
    origin: m.flags?.has('\\Draft') ? parseOrigin(headerValue(headers, ORIGIN_HEADER)) : null,
  };
}

export function sanitizeLoaded(msg: LoadedMessage, allowRemote: boolean): SanitizedHtml | null {
  return msg.rawHtml === null ? null : sanitizeMailHtml(msg.rawHtml, { allowRemote, inline: msg.inline });
}
