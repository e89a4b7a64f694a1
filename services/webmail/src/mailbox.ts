// What the API needs of IMAP, on one connection of the pool: folders with counts, pages of
// a folder's list (sorted, searched or threaded on the server: SORT and THREAD, RFC 5256),
// flags, moves and appends. Nothing here keeps state between requests.
import type { FetchMessageObject, FetchQueryObject, ImapFlow, MessageAddressObject } from 'imapflow';
import type { Address, Flags, FolderInfo, ListPage, ListRow } from './api-types.js';
import { errors } from './errors.js';

/** Special-use folders first, in the order people expect them; then the rest by name. */
const SPECIAL_ORDER = ['\\Inbox', '\\Drafts', '\\Sent', '\\Archive', '\\Junk', '\\Trash'];

export async function listFolders(c: ImapFlow): Promise<FolderInfo[]> {
  const list = await c.list({ statusQuery: { messages: true, unseen: true } });
  const rank = (f: FolderInfo) => {
    const i = f.specialUse ? SPECIAL_ORDER.indexOf(f.specialUse) : -1;
    return i < 0 ? SPECIAL_ORDER.length : i;
  };
  return list
    .map((l): FolderInfo => ({
      path: l.path,
      name: l.name,
      parent: l.parentPath,
      delimiter: l.delimiter,
      specialUse: l.specialUse ?? null,
      total: l.status?.messages ?? 0,
      unseen: l.status?.unseen ?? 0,
      selectable: !l.flags.has('\\Noselect') && !l.flags.has('\\NonExistent'),
    }))
    .sort((a, b) => rank(a) - rank(b) || a.path.localeCompare(b.path));
}

/** The folder of a special use (\Sent, \Trash...), else one of that name, else the name itself. */
export function specialFolder(folders: FolderInfo[], use: string, fallback: string): string {
  return (
    folders.find((f) => f.specialUse === use)?.path ??
    folders.find((f) => f.path.toLowerCase() === fallback.toLowerCase())?.path ??
    fallback
  );
}

/** Selects the folder (or refreshes it, so EXISTS is current when it is already selected). */
export async function selectFolder(
  c: ImapFlow,
  folder: string,
): Promise<{ exists: number; uidValidity: bigint }> {
  if (c.mailbox && c.mailbox.path === folder) await c.noop();
  else await c.mailboxOpen(folder);
  const mb = c.mailbox;
  if (!mb) throw errors.noSuchFolder();
  return { exists: mb.exists, uidValidity: mb.uidValidity };
}

// --- the list ------------------------------------------------------------------------

export type SortKey = 'arrival' | 'date' | 'from' | 'subject' | 'size';
export interface ListQuery {
  offset: number;
  limit: number;
  sort: SortKey;
  reverse: boolean;
  /** Search text (see searchCriteria); empty for all. */
  q: string;
  unread: boolean;
  flagged: boolean;
  /** One row per conversation (THREAD=REFERENCES). */
  threads: boolean;
  /**
   * UIDs not to list, as if moved already: the browser's moves still on their way, so that
   * the pages it reads meanwhile count places as it shows them.
   */
  exclude?: number[];
}

const ROW_QUERY: FetchQueryObject = {
  uid: true,
  flags: true,
  envelope: true,
  size: true,
  internalDate: true,
  // answered from the header index on the server: no message file is opened
  headers: ['content-type'],
};

/** IMAP flags in the shape the front end uses. */
export function flagsOf(set: Set<string> | undefined): Flags {
  const has = (f: string) => !!set?.has(f);
  return {
    seen: has('\\Seen'),
    flagged: has('\\Flagged'),
    answered: has('\\Answered'),
    forwarded: has('$Forwarded'),
    draft: has('\\Draft'),
    junk: has('$Junk'),
  };
}

export const toAddress = (a: MessageAddressObject | undefined): Address | null =>
  a && (a.address || a.name) ? { name: a.name ?? '', address: a.address ?? '' } : null;
export const toAddresses = (list: MessageAddressObject[] | undefined): Address[] =>
  (list ?? []).map(toAddress).filter((a): a is Address => a !== null);

/**
 * When a message was written, for the list and the reader: its Date header when that
 * is a date, else when it arrived (INTERNALDATE). A Date header is the sender's to
 * write: imapflow hands on one that is no date as the text it was ("soon", "32 Foo
 * 2024"), and a message of such must still be listed and opened.
 */
export function messageDate(header: Date | string | undefined, arrived: Date | string | undefined): string {
  for (const d of [header, arrived]) {
    const ms = d === undefined || d === '' ? NaN : new Date(d).getTime();
    if (Number.isFinite(ms)) return new Date(ms).toISOString();
  }
  return new Date(0).toISOString();
}

function rowOf(m: FetchMessageObject): ListRow {
  const env = m.envelope;
  return {
    uid: m.uid,
    subject: env?.subject ?? '',
    from: toAddress(env?.from?.[0] ?? env?.sender?.[0]),
    to: toAddresses(env?.to),
    date: messageDate(env?.date, m.internalDate),
    size: m.size ?? 0,
    flags: flagsOf(m.flags),
    attachment: /^content-type:\s*multipart\/mixed/im.test(m.headers?.toString('latin1') ?? ''),
  };
}

async function fetchRows(c: ImapFlow, range: string, byUid: boolean): Promise<ListRow[]> {
  const rows: ListRow[] = [];
  for await (const m of c.fetch(range, ROW_QUERY, { uid: byUid })) rows.push(rowOf(m));
  return rows;
}

/**
 * A page of the selected folder's list. The plain newest-first view pages by sequence
 * number (no SORT): its cost does not grow with the folder.
 */
export async function listPage(c: ImapFlow, q: ListQuery): Promise<ListPage> {
  const exists = c.mailbox ? c.mailbox.exists : 0;
  const criteria = searchCriteria(q);
  const exclude = new Set(q.exclude);
  if (q.sort === 'arrival' && !criteria.length && !q.threads) {
    // sequence numbers are arrival order: the page is a range, whatever the folder's size
    const skip = (exclude.size && exists && (await c.search({ uid: [...exclude].join(',') }))) || [];
    const seqs = placesOf(exists, q.offset, q.limit, q.reverse, skip);
    const [lo, hi] = [Math.min(...seqs), Math.max(...seqs)];
    const rows = seqs.length ? await fetchRows(c, `${lo}:${hi}`, false) : [];
    rows.sort((a, b) => (q.reverse ? b.uid - a.uid : a.uid - b.uid));
    return { total: exists - skip.length, offset: q.offset, rows: rows.filter((r) => !exclude.has(r.uid)) };
  }
  if (exclude.size) criteria.push(atom('NOT'), atom('UID'), atom([...exclude].join(',')));
  if (q.threads) return threadPage(c, q, criteria);
  const uids = exists ? await sortUids(c, q.sort, q.reverse, criteria) : [];
  const page = uids.slice(q.offset, q.offset + q.limit);
  const rows = page.length ? await fetchRows(c, page.join(','), true) : [];
  const byUid = new Map(rows.map((r) => [r.uid, r]));
  return {
    total: uids.length,
    offset: q.offset,
    rows: page.map((u) => byUid.get(u)).filter((r): r is ListRow => !!r),
  };
}

/**
 * The sequence numbers at places offset to offset + limit of the folder (1 to exists, the
 * last first when `reverse`), those in `skip` (a few) left out.
 */
export function placesOf(exists: number, offset: number, limit: number, reverse: boolean, skip: number[]) {
  const seqAt = (place: number) => (reverse ? exists - place : place + 1);
  const out = new Set(skip.map((seq) => (reverse ? exists - seq : seq - 1)));
  let place = offset;
  for (const p of [...out].sort((a, b) => a - b)) if (p <= place) place++;
  const seqs: number[] = [];
  for (; place < exists && seqs.length < limit; place++) if (!out.has(place)) seqs.push(seqAt(place));
  return seqs;
}

async function threadPage(c: ImapFlow, q: ListQuery, criteria: Attr[]): Promise<ListPage> {
  const threads = (await threadUids(c, criteria.length ? criteria : [atom('ALL')]))
    // newest activity first: UIDs grow with arrival
    .map((uids) => uids.sort((a, b) => a - b))
    .sort((a, b) => (q.reverse ? b.at(-1)! - a.at(-1)! : a.at(-1)! - b.at(-1)!));
  const page = threads.slice(q.offset, q.offset + q.limit);
  const all = page.flat();
  const flags = new Map<number, Flags>();
  const rows = new Map<number, ListRow>();
  if (all.length) {
    const newest = new Set(page.map((t) => t.at(-1)!));
    for await (const m of c.fetch(all.join(','), { uid: true, flags: true }, { uid: true }))
      flags.set(m.uid, flagsOf(m.flags));
    for (const r of await fetchRows(c, [...newest].join(','), true)) rows.set(r.uid, r);
  }
  return {
    total: threads.length,
    offset: q.offset,
    rows: page
      .map((uids): ListRow | null => {
        const row = rows.get(uids.at(-1)!);
        if (!row) return null;
        const unread = uids.filter((u) => flags.get(u) && !flags.get(u)!.seen).length;
        return { ...row, thread: { uids, count: uids.length, unread } };
      })
      .filter((r): r is ListRow => r !== null),
  };
}

// --- SORT, THREAD and SEARCH keys ---------------------------------------------------------

type Attr = { type: 'ATOM' | 'STRING'; value: string } | Attr[];
const atom = (value: string): Attr => ({ type: 'ATOM', value });
const str = (value: string): Attr => ({ type: 'STRING', value });

interface Untagged {
  attributes?: unknown[];
  numbers?: number[];
}
/** imapflow's command runner; SORT and THREAD have no method of their own there. */
type Exec = (
  command: string,
  attributes: Attr[],
  options: { untagged: Record<string, (u: Untagged) => Promise<void>> },
) => Promise<{ next(): void }>;
const execOf = (c: ImapFlow): Exec => (c as unknown as { exec: Exec }).exec.bind(c);

/** Numbers in a parsed response, depth first (a THREAD tree flattens to its members). */
function numbersIn(items: unknown[], out: number[] = []): number[] {
  for (const a of items) {
    if (Array.isArray(a)) numbersIn(a, out);
    else if (a && typeof a === 'object' && 'value' in a) {
      const n = Number(a.value);
      if (Number.isInteger(n) && n > 0) out.push(n);
    }
  }
  return out;
}

/** UID SORT (RFC 5256): every matching UID in order, computed by the server from its header index. */
export async function sortUids(
  c: ImapFlow,
  key: SortKey,
  reverse: boolean,
  criteria: Attr[],
): Promise<number[]> {
  const keys = [...(reverse ? [atom('REVERSE')] : []), atom(key.toUpperCase())];
  const uids: number[] = [];
  const res = await execOf(c)(
    'UID SORT',
    [keys, atom('UTF-8'), ...(criteria.length ? criteria : [atom('ALL')])],
    {
      untagged: {
        SORT: async (u) => {
          if (u.numbers) uids.push(...u.numbers);
          else numbersIn(u.attributes ?? [], uids);
        },
      },
    },
  );
  res.next();
  return uids;
}

/** UID THREAD REFERENCES (RFC 5256 §3): each conversation as the UIDs in it. */
export async function threadUids(c: ImapFlow, criteria: Attr[]): Promise<number[][]> {
  const threads: number[][] = [];
  const res = await execOf(c)('UID THREAD', [atom('REFERENCES'), atom('UTF-8'), ...criteria], {
    untagged: {
      THREAD: async (u) => {
        for (const t of u.attributes ?? []) {
          const uids = Array.isArray(t) ? numbersIn(t) : numbersIn([t]);
          if (uids.length) threads.push(uids);
        }
      },
    },
  });
  res.next();
  return threads;
}

/** The search box's fields (`from:`...), of which a value may follow after spaces. */
const FIELD = '(?:from|to|cc|subject|is):';
/**
 * One term of the search box. A known field may have spaces before its value (`from: alice`,
 * as Gmail reads it), but another field is never its value: in `subject: is:unread` the
 * empty `subject:` is dropped (the first alternative, no value) and `is:unread` stands, as
 * in Gmail. An unknown field stays part of the word (`re:` in `re:meeting`).
 */
const SEARCH_TERM = new RegExp(
  `\\b${FIELD}\\s+(?=${FIELD})|(?:\\b(${FIELD})\\s*|(\\w+:))?(?:"([^"]*)"|(\\S+))`,
  'gi',
);

/**
 * Search keys from the search box: words (each in subject, from, to or body), "quoted
 * phrases", and `from:` `to:` `subject:` `is:unread` `is:read` `is:flagged`, all of which
 * must match; plus the unread and flagged filters.
 */
export function searchCriteria(q: Pick<ListQuery, 'q' | 'unread' | 'flagged'>): Attr[] {
  const out: Attr[] = [];
  if (q.unread) out.push(atom('UNSEEN'));
  if (q.flagged) out.push(atom('FLAGGED'));
  for (const m of q.q.matchAll(SEARCH_TERM)) {
    const field = (m[1] ?? m[2])?.toLowerCase();
    const value = (m[3] ?? m[4] ?? '').trim();
    if (!value) continue;
    if (field === 'is:') {
      const is = { unread: 'UNSEEN', read: 'SEEN', flagged: 'FLAGGED', answered: 'ANSWERED' }[
        value.toLowerCase()
      ];
      if (is) out.push(atom(is));
      continue;
    }
    if (field === 'from:' || field === 'to:' || field === 'subject:' || field === 'cc:') {
      out.push(atom(field.slice(0, -1).toUpperCase()), str(value));
      continue;
    }
    const word = field ? `${field}${value}` : value;
    // OR takes two keys: (((SUBJECT w OR FROM w) OR TO w) OR BODY w)
    out.push(
      atom('OR'),
      atom('OR'),
      atom('OR'),
      atom('SUBJECT'),
      str(word),
      atom('FROM'),
      str(word),
      atom('TO'),
      str(word),
      atom('BODY'),
      str(word),
    );
  }
  return out;
}

// --- changes ------------------------------------------------------------------------------

/** The UIDs of `uids` that exist in the selected folder (others are someone's guess or gone). */
export async function existingUids(c: ImapFlow, uids: number[]): Promise<number[]> {
  if (!uids.length) return [];
  const found: number[] = [];
  for await (const m of c.fetch(uids.join(','), { uid: true }, { uid: true })) found.push(m.uid);
  return found;
}
