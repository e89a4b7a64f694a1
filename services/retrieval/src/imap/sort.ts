// SORT's ordering (RFC 5256 §3, SORT=DISPLAY RFC 5957 §3) over a view of the selected
// folder: used by the SORT command and by CONTEXT=SORT, which sorts again after a change.
import {
  baseSubject,
  casemap,
  compareOctets,
  decodeHeader,
  header,
  parseAddressList,
  type Address,
  type HeaderField,
  type SearchKey,
} from '@mailyard/imap-core';
import type { MailFolder, MessageInfo } from '@mailyard/mailstore';
import type { MessageCache } from '../message-cache.js';
import { FETCH_CHUNK } from './fetch.js';
import { SearchEvaluator } from './search.js';
import type { SelectedMailbox } from './selected.js';

// RFC 5256 §3 and SORT=DISPLAY (RFC 5957 §3)
export const SORT_KEYS = [
  'ARRIVAL',
  'CC',
  'DATE',
  'FROM',
  'SIZE',
  'SUBJECT',
  'TO',
  'DISPLAYFROM',
  'DISPLAYTO',
];

export interface SortCriterion {
  key: string;
  reverse: boolean;
}

/** Headers of the whole folder in one pass (from the index, else the files read together). */
export async function prefetchHeaders(view: SelectedMailbox, cache: MessageCache): Promise<void> {
  const all: MessageInfo[] = [];
  for (const uid of view.uids) {
    const m = view.info(uid);
    if (m) all.push(m);
  }
  for (let k = 0; k < all.length; k += FETCH_CHUNK) {
    await cache.headers(view.folder, all.slice(k, k + FETCH_CHUNK));
  }
}

/**
 * INTERNALDATE as the client sees it, to the second (RFC 9051 date-time): the file's
 * mtime has milliseconds, which would order messages that arrived within one second
 * though their INTERNALDATEs tie (RFC 5256 §3 orders ties by sequence number).
 */
async function internalDate(cache: MessageCache, folder: MailFolder, m: MessageInfo): Promise<number> {
  return Math.floor((await cache.internalDate(folder, m)) / 1000) * 1000;
}

/** RFC 5256 §2.2: the Date header, or INTERNALDATE when it is missing or unparsable. */
export async function sentDate(
  cache: MessageCache,
  folder: MailFolder,
  m: MessageInfo,
  h: HeaderField[],
): Promise<number> {
  const d = Date.parse((header(h, 'date') ?? '').replace(/\s*\([^)]*\)\s*$/, ''));
  return Number.isNaN(d) ? internalDate(cache, folder, m) : d;
}

/** The selected messages matching the search keys, with their header fields. */
export async function* matchingWithHeaders(
  view: SelectedMailbox,
  cache: MessageCache,
  key: SearchKey,
): AsyncGenerator<{ seq: number; m: MessageInfo; h: HeaderField[] }> {
  const ev = new SearchEvaluator(view, view.folder, cache);
  await prefetchHeaders(view, cache);
  for (let i = 0; i < view.uids.length; i++) {
    const m = view.info(view.uids[i]!);
    if (!m || !(await ev.matches(key, i + 1, m))) continue;
    yield { seq: i + 1, m, h: (await cache.header(view.folder, m)).fields };
  }
}

/**
 * The first address of an address header as the ENVELOPE shows it: a group's start
 * counts, its name as the mailbox (RFC 5256 §3 sorts by "the addr-mailbox of the first
 * address", which for a group is the group name).
 */
function firstAddress(h: HeaderField[], name: string): Address | undefined {
  return parseAddressList(header(h, name) ?? '')[0];
}

/** FROM, TO, CC: the first address's mailbox (local part), RFC 5256 §3. */
function addressKey(h: HeaderField[], name: string): string {
  return casemap(firstAddress(h, name)?.mailbox ?? '');
}

/**
 * DISPLAYFROM, DISPLAYTO (RFC 5957 §3): the first address's display name, decoded;
 * without one (absent or empty) its addr-spec.
 */
function displayKey(h: HeaderField[], name: string): string {
  const a = firstAddress(h, name);
  if (!a) return '';
  const display = a.name === null ? '' : decodeHeader(a.name);
  if (display) return casemap(display);
  return casemap(a.host === null ? (a.mailbox ?? '') : `${a.mailbox ?? ''}@${a.host}`);
}

async function sortKey(
  cache: MessageCache,
  folder: MailFolder,
  key: string,
  m: MessageInfo,
  h: HeaderField[],
): Promise<string | number> {
  switch (key) {
    case 'ARRIVAL':
      return internalDate(cache, folder, m);
    case 'DATE':
      return sentDate(cache, folder, m, h);
    case 'SIZE':
      // RFC 5256 §3: RFC822.SIZE
      return cache.sentSize(folder, m);
    case 'SUBJECT':
      return baseSubject(header(h, 'subject') ?? '');
    case 'DISPLAYFROM':
      return displayKey(h, 'from');
    case 'DISPLAYTO':
      return displayKey(h, 'to');
    default:
      return addressKey(h, key.toLowerCase());
  }
}

/**
 * The messages matching the search keys, in the order of the criteria (RFC 5256 §3:
 * strings by i;unicode-casemap, ties by sequence number, REVERSE turning one criterion
 * only). Every key is a fact of the message that never changes, so a message keeps its
 * place relative to the others for as long as both exist: CONTEXT=SORT relies on it.
 */
export async function sortedMatches(
  view: SelectedMailbox,
  cache: MessageCache,
  key: SearchKey,
  criteria: readonly SortCriterion[],
): Promise<{ seq: number; uid: number }[]> {
  const rows: { seq: number; uid: number; keys: (string | number)[] }[] = [];
  for await (const { seq, m, h } of matchingWithHeaders(view, cache, key)) {
    const keys: (string | number)[] = [];
    for (const c of criteria) keys.push(await sortKey(cache, view.folder, c.key, m, h));
    rows.push({ seq, uid: m.uid, keys });
  }
  rows.sort((x, y) => {
    for (let k = 0; k < criteria.length; k++) {
      const p = x.keys[k]!;
      const q = y.keys[k]!;
      const cmp = typeof p === 'number' ? p - (q as number) : compareOctets(p, q as string);
      if (cmp) return criteria[k]!.reverse ? -cmp : cmp;
    }
    // sequence order is UID order
    return x.uid - y.uid;
  });
  return rows;
}
