/**
 * Header fields to add at the top of a message and to remove from its header section:
 * what a data-stage policy decision asks for (msa, mta-inbound), and what outbound-relay
 * strips before mail leaves (our own filing headers).
 */
export interface HeaderEdits {
  headers: { name: string; value: string }[];
  /**
   * Fields to remove, by name; with `valuePrefix`, only those whose value starts with that
   * authserv-id (RFC 8601 §2.2: after any comments, as a token or a quoted-string, in any case).
   */
  removeHeaders: { name: string; valuePrefix?: string }[];
}

/**
 * The verdict headers only our policy writes. A copy that arrives with a message, from
 * the sender or a hop before us, is a forgery: a reader (a user, a filter rule) would
 * take it for ours. And what the webmail writes into a draft only (X-Mailyard-Draft, and
 * X-Mailyard-Origin: the folder and UID of the message a reply answers), which a desktop
 * client sending that draft as it stands would pass on to its recipients.
 */
const OWN_HEADERS = [
  'X-Mailyard-Policy',
  'X-Mailyard-Bulk',
  'X-Mailyard-Virus-Scan',
  'X-Mailyard-Spam-Scan',
  'X-Mailyard-Draft',
  'X-Mailyard-Origin',
] as const;

/**
 * What is removed from every message entering us, on port 25 and on submission, whatever
 * the policy decided or whether it was asked: our verdict headers, and results under our
 * authserv-id (RFC 8601 §5: removed where mail enters the domain; a logged-in user is no
 * more entitled to write them than a stranger).
 */
export function ownHeaderRemovals(authservId: string): HeaderEdits['removeHeaders'] {
  return [
    ...OWN_HEADERS.map((name) => ({ name })),
    { name: 'Authentication-Results', valuePrefix: authservId },
  ];
}

/**
 * Applies header edits to a raw message (CRLF line endings). Only the header section is
 * read, in one pass; the body is kept byte for byte. Added fields go on top, in the order
 * given. Runs for every message an intake takes: nothing removed, nothing added, the
 * message itself comes back, not a copy.
 */
export function applyHeaderEdits(message: Buffer, edits: HeaderEdits): Buffer {
  const rest = edits.removeHeaders.length ? removeFields(message, edits.removeHeaders) : message;
  if (!edits.headers.length) return rest;
  const added = edits.headers.map((h) => `${h.name}: ${h.value}\r\n`).join('');
  return Buffer.concat([Buffer.from(added), rest]);
}

/** The message without the header fields `removals` name; itself when none is there. */
function removeFields(message: Buffer, removals: HeaderEdits['removeHeaders']): Buffer {
  // by lower-case name: the authserv-ids whose results go, or null for every field of the name
  const byName = new Map<string, Set<string> | null>();
  for (const r of removals) {
    const name = r.name.toLowerCase();
    const ids = byName.get(name);
    if (r.valuePrefix === undefined) byName.set(name, null);
    else if (ids !== null) byName.set(name, (ids ?? new Set()).add(r.valuePrefix.toLowerCase()));
  }
  const end = headerEnd(message);
  const fields = message
    .subarray(0, end)
    .toString('latin1')
    .split(/\r\n(?![ \t])/);
  const kept = fields.filter((f) => {
    const colon = f.indexOf(':');
    if (colon <= 0) return true;
    const ids = byName.get(f.slice(0, colon).trim().toLowerCase());
    if (ids === undefined) return true;
    if (ids === null) return false;
    const id = authservId(
      f
        .slice(colon + 1)
        .replace(/\r\n[ \t]+/g, ' ')
        .toLowerCase(),
    );
    return id === null || !ids.has(id);
  });
  if (kept.length === fields.length) return message;
  return Buffer.concat([Buffer.from(kept.join('\r\n'), 'latin1'), message.subarray(end)]);
}

/**
 * The authserv-id an Authentication-Results value starts with (RFC 8601 §2.2:
 * `[CFWS] authserv-id`, a token or a quoted-string, RFC 2045 §5.1), or null when it has
 * none. Read as a reader of the field reads it, so a comment in front or quotes do not
 * hide an id from the removal.
 */
function authservId(value: string): string | null {
  let i = skipCfws(value, 0);
  if (i < 0) return null;
  if (value[i] === '"') {
    let id = '';
    for (i++; i < value.length; i++) {
      const c = value[i]!;
      if (c === '"') return id;
      // a quoted-pair stands for the character after the backslash
      id += c === '\\' ? (value[++i] ?? '') : c;
    }
    return null;
  }
  const token = /^[^\x00-\x20()<>@,;:\\"/[\]?=\x7f]+/.exec(value.slice(i));
  return token ? token[0] : null;
}

/** Index past white space and comments (nested, with quoted-pairs) from `i`; -1 for one left open. */
function skipCfws(value: string, i: number): number {
  let depth = 0;
  for (; i < value.length; i++) {
    const c = value[i]!;
    if (c === '\\' && depth > 0) i++;
    else if (c === '(') depth++;
    else if (c === ')' && depth > 0) depth--;
    else if (depth === 0 && c !== ' ' && c !== '\t') return i;
  }
  return depth > 0 ? -1 : i;
}

/** Offset of the blank line ending the header block (the body starts after it). */
function headerEnd(message: Buffer): number {
  const i = message.indexOf('\r\n\r\n');
  return i === -1 ? message.length : i;
}
