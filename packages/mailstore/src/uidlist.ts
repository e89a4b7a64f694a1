// Dovecot's `dovecot-uidlist` (version 3), so a Dovecot pointed at the same Maildir
// sees the same UIDs, and `dovecot-keywords` for keyword letters in file names.
// https://doc.dovecot.org/admin_manual/mailbox_formats/maildir/#maildir-mailbox-format

export interface UidList {
  validity: number;
  next: number;
  /** Mailbox GUID (Dovecot's G field); kept as found. */
  guid: string;
  /** Base file name (without `:2,flags`) -> UID, in UID order. */
  entries: Map<string, number>;
}

/**
 * Parses a `dovecot-uidlist`. With `prev`, an earlier text of the same file and what it
 * parsed to: when the new one only adds lines at the end (its header aside), as after an
 * APPEND, the entries of `prev` are kept and only the lines added are parsed. The names
 * then stay the same strings, so lookups by name need not hash them again.
 */
export function parseUidList(
  text: string,
  prev?: { text: string; value: UidList | null } | null,
): UidList | null {
  const nl = text.indexOf('\n');
  const head = parseHeader(nl < 0 ? text : text.slice(0, nl));
  if (!head) return null;
  const old = prev?.value;
  const oldNl = prev ? prev.text.indexOf('\n') : -1;
  if (old && old.validity === head.validity && nl >= 0 && oldNl >= 0 && prev.text.endsWith('\n')) {
    const body = prev.text.length - oldNl;
    if (text.length - nl >= body && text.startsWith(prev.text.slice(oldNl), nl))
      return appendedUidList({ ...old, ...head, next: Math.max(head.next, old.next) }, text.slice(nl + body));
  }
  const entries = new Map<string, number>();
  const next = readEntries(nl < 0 ? '' : text.slice(nl + 1), entries, head.next);
  return { ...head, next, entries };
}

/**
 * The list after `lines` were appended to the file it was parsed from (whole lines, as
 * `formatUidEntries` writes them, or as Dovecot appends its records).
 */
export function appendedUidList(prev: UidList, lines: string): UidList {
  const entries = new Map(prev.entries);
  return { ...prev, next: readEntries(lines, entries, prev.next), entries };
}

/** Entry lines for messages numbered since the list was written, to append to it. */
export function formatUidEntries(added: readonly (readonly [string, number])[]): string {
  let out = '';
  for (const [base, uid] of added) out += `${uid} :${base}\n`;
  return out;
}

function parseHeader(head: string): { validity: number; next: number; guid: string } | null {
  let validity = 0;
  let next = 1;
  let guid = '';
  if (head.startsWith('3 ')) {
    for (const f of head.slice(2).split(' ')) {
      if (f[0] === 'V') validity = Number(f.slice(1));
      else if (f[0] === 'N') next = Number(f.slice(1));
      else if (f[0] === 'G') guid = f.slice(1);
    }
  } else {
    const m = /^1 (\d+) (\d+)/.exec(head);
    if (!m) return null;
    validity = Number(m[1]);
    next = Number(m[2]);
  }
  return validity ? { validity, next, guid } : null;
}

/**
 * Adds the entry lines of `text` to `entries`; returns `next` raised above every UID read.
 * A last line without its newline is one being appended (or cut short by a crash) and is
 * left out, as Dovecot reads only whole lines.
 */
function readEntries(text: string, entries: Map<string, number>, next: number): number {
  const lines = text.split('\n');
  lines.pop();
  for (const line of lines) {
    if (!line) continue;
    const m = /^(\d+)(?: [^:]*)? ?:(.+)$/.exec(line) ?? /^(\d+) (.+)$/.exec(line);
    if (!m) continue;
    const uid = Number(m[1]);
    entries.set(m[2]!, uid);
    if (uid >= next) next = uid + 1;
  }
  return next;
}

export function formatUidList(l: UidList): string {
  let out = `3 V${l.validity} N${l.next}${l.guid ? ` G${l.guid}` : ''}\n`;
  for (const [base, uid] of l.entries) out += `${uid} :${base}\n`;
  return out;
}

/** `dovecot-keywords`: `<index> <keyword>` per line; index 0 is letter `a`. */
export function parseKeywords(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d+) (\S+)$/.exec(line);
    if (m && Number(m[1]) < 26) out[Number(m[1])] = m[2]!;
  }
  return out;
}

export function formatKeywords(kws: string[]): string {
  return kws.map((k, i) => (k ? `${i} ${k}\n` : '')).join('');
}
