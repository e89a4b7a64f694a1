/**
 * Header fields to add at the top of a message and to remove from its header section:
 * what a data-stage policy decision asks for (msa, mta-inbound), and what outbound-relay
 * strips before mail leaves (our own filing headers).
 */
export interface HeaderEdits {
  headers: { name: string; value: string }[];
  /** Fields to remove, by name; with `valuePrefix`, only those whose value starts with that authserv-id. */
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
          (r.valuePrefix === undefined || isIdPrefix(value, r.valuePrefix.toLowerCase())),
      );
    });
    body = Buffer.concat([Buffer.from(kept.join('\r\n'), 'latin1'), message.subarray(end)]);
  }
  const added = edits.headers.map((h) => `${h.name}: ${h.value}\r\n`).join('');
  return Buffer.concat([Buffer.from(added), body]);
}

/** `value` starts with the authserv-id `id` followed by `;`, white space or the end (RFC 8601 §2.2). */
function isIdPrefix(value: string, id: string): boolean {
  if (!value.startsWith(id)) return false;
  const next = value[id.length];
  return next === undefined || next === ';' || next === ' ' || next === '\t';
}

/** Offset of the blank line ending the header block (the body starts after it). */
function headerEnd(message: Buffer): number {
  const i = message.indexOf('\r\n\r\n');
  return i === -1 ? message.length : i;
}
