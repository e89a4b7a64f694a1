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

export function parseUidList(text: string): UidList | null {
  const lines = text.split('\n');
  const head = lines[0] ?? '';
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
  if (!validity) return null;
  const entries = new Map<string, number>();
  for (const line of lines.slice(1)) {
    if (!line) continue;
    const m = /^(\d+)(?: [^:]*)? ?:(.+)$/.exec(line) ?? /^(\d+) (.+)$/.exec(line);
    if (!m) continue;
    const uid = Number(m[1]);
    entries.set(m[2]!, uid);
    if (uid >= next) next = uid + 1;
  }
  return { validity, next, guid, entries };
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
