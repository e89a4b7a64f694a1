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
 * Applies header edits to a raw message (CRLF line endings). Only the header section is
 * read; the body is kept byte for byte. Added fields go on top, in the order given.
 */
export function applyHeaderEdits(message: Buffer, edits: HeaderEdits): Buffer {
  if (!edits.headers.length && !edits.removeHeaders.length) return message;
  let body = message;
  if (edits.removeHeaders.length) {
    const end = headerEnd(message);
    const head = message.subarray(0, end).toString('latin1');
    const fields = head.split(/\r\n(?![ \t])/);
    const kept = fields.filter((f) => {
      const colon = f.indexOf(':');
      if (colon <= 0) return true;
      const name = f.slice(0, colon).trim().toLowerCase();
      const value = f
        .slice(colon + 1)
        .replace(/\r\n[ \t]+/g, ' ')
        .trim()
        .toLowerCase();
      return !edits.removeHeaders.some(
        (r) =>
          r.name.toLowerCase() === name &&
          (r.valuePrefix === undefined || authservId(value) === r.valuePrefix.toLowerCase()),
      );
    });
    body = Buffer.concat([Buffer.from(kept.join('\r\n'), 'latin1'), message.subarray(end)]);
  }
  const added = edits.headers.map((h) => `${h.name}: ${h.value}\r\n`).join('');
  return Buffer.concat([Buffer.from(added), body]);
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
