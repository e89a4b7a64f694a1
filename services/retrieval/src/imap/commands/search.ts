// SEARCH (RFC 9051 §6.4.4, ESEARCH RETURN options, CONDSTORE MODSEQ), SORT and THREAD
// (RFC 5256).
import {
  BadCharsetError,
  baseSubject,
  casemap,
  compareOctets,
  decodeWords,
  formatSequence,
  header,
  ParseError,
  parseAddressList,
  parseSearch,
  parseSearchKeys,
  renderThreads,
  SUPPORTED_CHARSETS,
  thread,
  THREAD_ALGORITHMS,
  tokenText,
  usesModseq,
  type Address,
  type ArgReader,
  type HeaderField,
  type SearchKey,
  type ThreadAlgorithm,
  type ThreadMessage,
} from '@mailyard/imap-core';
import type { MailFolder, MessageInfo } from '@mailyard/mailstore';
import type { SelectedContext } from '../context.js';
import { FETCH_CHUNK } from '../fetch.js';
import { reply } from '../replies.js';
import { SearchEvaluator } from '../search.js';
import type { SelectedMailbox } from '../selected.js';
import { SELECTED, command, withUid, type CommandGroup } from './command.js';

interface SearchArgs {
  ret: string[] | null;
  key: SearchKey | null;
  badCharset: boolean;
}

function parseSearchArgs(r: ArgReader): SearchArgs {
  let ret: string[] | null = null;
  const first = r.peek();
  if (first?.t === 'atom' && first.v.toUpperCase() === 'RETURN') {
    r.next();
    ret = r.list('return options').map((t) => tokenText(t).toUpperCase());
    if (ret.some((o) => !['MIN', 'MAX', 'ALL', 'COUNT', 'SAVE'].includes(o)))
      throw new ParseError('bad RETURN option');
    if (!ret.length) ret = ['ALL'];
  }
  try {
    return { ret, key: parseSearch(r), badCharset: false };
  } catch (err) {
    if (err instanceof BadCharsetError) return { ret, key: null, badCharset: true };
    throw err;
  }
}

async function runSearch(s: SelectedContext, tag: string, a: SearchArgs, name: string): Promise<void> {
  if (a.badCharset || !a.key) throw reply.badCharset(SUPPORTED_CHARSETS);
  const view = s.selected;
  const byUid = name.startsWith('UID');
  const key = a.key;
  const modseq = usesModseq(key);
  if (modseq) s.enabled.add('CONDSTORE');
  const ev = new SearchEvaluator(view, view.folder, s.deps.cache);
  const hits: { seq: number; uid: number; modseq: number }[] = [];
  for (let i = 0; i < view.uids.length; i++) {
    const m = view.info(view.uids[i]!);
    if (!m) continue;
    if (await ev.matches(key, i + 1, m)) hits.push({ seq: i + 1, uid: m.uid, modseq: m.modseq });
  }
  const nums = hits.map((h) => (byUid ? h.uid : h.seq));
  const maxMod = hits.reduce((x, h) => Math.max(x, h.modseq), 0);
  if (a.ret || s.enabled.rev2) {
    const ret = a.ret ?? ['ALL'];
    const parts = [`* ESEARCH (TAG "${tag}")${byUid ? ' UID' : ''}`];
    if (ret.includes('MIN') && nums.length) parts.push(`MIN ${Math.min(...nums)}`);
    if (ret.includes('MAX') && nums.length) parts.push(`MAX ${Math.max(...nums)}`);
    if (ret.includes('COUNT')) parts.push(`COUNT ${nums.length}`);
    if (ret.includes('ALL') && nums.length) parts.push(`ALL ${formatSequence(nums)}`);
    if (modseq && nums.length) parts.push(`MODSEQ ${maxMod}`);
    s.send(parts.join(' ') + '\r\n');
  } else {
    s.send(
      `* SEARCH${nums.length ? ' ' + nums.join(' ') : ''}${modseq && nums.length ? ` (MODSEQ ${maxMod})` : ''}\r\n`,
    );
  }
  await s.ok(tag, `${name} completed`, { allowExpunge: byUid });
}

// --- SORT and THREAD (RFC 5256) --------------------------------------------------------

/** Headers of the whole folder in one pass (from the index, else the files read together). */
async function prefetchHeaders(s: SelectedContext, view: SelectedMailbox): Promise<void> {
  const all: MessageInfo[] = [];
  for (const uid of view.uids) {
    const m = view.info(uid);
    if (m) all.push(m);
  }
  for (let k = 0; k < all.length; k += FETCH_CHUNK) {
    await s.deps.cache.headers(view.folder, all.slice(k, k + FETCH_CHUNK));
  }
}

/** RFC 5256 §2.2: the Date header, or INTERNALDATE when it is missing or unparsable. */
async function sentDate(
  s: SelectedContext,
  folder: MailFolder,
  m: MessageInfo,
  h: HeaderField[],
): Promise<number> {
  const d = Date.parse((header(h, 'date') ?? '').replace(/\s*\([^)]*\)\s*$/, ''));
  return Number.isNaN(d) ? s.deps.cache.internalDate(folder, m) : d;
}

/** `<charset> <search-key>...` of SORT and THREAD (RFC 5256: the charset is required). */
function parseCharsetSearch(r: ArgReader): SearchArgs {
  const charset = r.astring('charset').toUpperCase();
  if (!SUPPORTED_CHARSETS.includes(charset)) return { ret: null, key: null, badCharset: true };
  return { ret: null, key: parseSearchKeys(r), badCharset: false };
}

/** The selected messages matching SORT's or THREAD's search keys, with their header fields. */
async function* matchingWithHeaders(
  s: SelectedContext,
  search: SearchArgs,
): AsyncGenerator<{ seq: number; m: MessageInfo; h: HeaderField[] }> {
  if (search.badCharset || !search.key) throw reply.badCharset(SUPPORTED_CHARSETS);
  const view = s.selected;
  const ev = new SearchEvaluator(view, view.folder, s.deps.cache);
  await prefetchHeaders(s, view);
  for (let i = 0; i < view.uids.length; i++) {
    const m = view.info(view.uids[i]!);
    if (!m || !(await ev.matches(search.key, i + 1, m))) continue;
    yield { seq: i + 1, m, h: (await s.deps.cache.header(view.folder, m)).fields };
  }
}

// RFC 5256 §3 and SORT=DISPLAY (RFC 5957 §3)
const SORT_KEYS = ['ARRIVAL', 'CC', 'DATE', 'FROM', 'SIZE', 'SUBJECT', 'TO', 'DISPLAYFROM', 'DISPLAYTO'];

interface SortArgs {
  criteria: { key: string; reverse: boolean }[];
  search: SearchArgs;
}

function parseSort(r: ArgReader): SortArgs {
  const list = r.list('sort criteria').map((t) => tokenText(t).toUpperCase());
  const criteria: SortArgs['criteria'] = [];
  for (let i = 0; i < list.length; i++) {
    const reverse = list[i] === 'REVERSE';
    const key = reverse ? list[++i] : list[i];
    if (!key || !SORT_KEYS.includes(key)) throw new ParseError('bad sort criterion');
    criteria.push({ key, reverse });
  }
  if (!criteria.length) throw new ParseError('empty sort criteria');
  return { criteria, search: parseCharsetSearch(r) };
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
  const display = a.name === null ? '' : decodeWords(a.name);
  if (display) return casemap(display);
  return casemap(a.host === null ? (a.mailbox ?? '') : `${a.mailbox ?? ''}@${a.host}`);
}

async function sortKey(
  s: SelectedContext,
  key: string,
  m: MessageInfo,
  h: HeaderField[],
): Promise<string | number> {
  const folder = s.selected.folder;
  switch (key) {
    case 'ARRIVAL':
      return s.deps.cache.internalDate(folder, m);
    case 'DATE':
      return sentDate(s, folder, m, h);
    case 'SIZE':
      return folder.sizeOf(m);
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
 * The messages matching SORT's search keys, in the order of its criteria (RFC 5256 §3:
 * strings by i;unicode-casemap, ties by sequence number, REVERSE turning one criterion
 * only).
 */
async function sortedMatches(s: SelectedContext, a: SortArgs): Promise<{ seq: number; uid: number }[]> {
  const rows: { seq: number; uid: number; keys: (string | number)[] }[] = [];
  for await (const { seq, m, h } of matchingWithHeaders(s, a.search)) {
    const keys: (string | number)[] = [];
    for (const c of a.criteria) keys.push(await sortKey(s, c.key, m, h));
    rows.push({ seq, uid: m.uid, keys });
  }
  rows.sort((x, y) => {
    for (let k = 0; k < a.criteria.length; k++) {
      const p = x.keys[k]!;
      const q = y.keys[k]!;
      const cmp = typeof p === 'number' ? p - (q as number) : compareOctets(p, q as string);
      if (cmp) return a.criteria[k]!.reverse ? -cmp : cmp;
    }
    return x.seq - y.seq;
  });
  return rows;
}

async function runSort(s: SelectedContext, tag: string, a: SortArgs, name: string): Promise<void> {
  const byUid = name.startsWith('UID');
  const rows = await sortedMatches(s, a);
  s.send(`* SORT${rows.map((r) => ' ' + (byUid ? r.uid : r.seq)).join('')}\r\n`);
  await s.ok(tag, `${name} completed`, { allowExpunge: byUid });
}

interface ThreadArgs {
  algorithm: ThreadAlgorithm;
  search: SearchArgs;
}

function parseThread(r: ArgReader): ThreadArgs {
  const name = r.atom('threading algorithm').toUpperCase();
  const algorithm = THREAD_ALGORITHMS.find((a) => a === name);
  if (!algorithm) throw new ParseError(`unknown threading algorithm ${name.slice(0, 30)}`);
  return { algorithm, search: parseCharsetSearch(r) };
}

async function runThread(s: SelectedContext, tag: string, a: ThreadArgs, name: string): Promise<void> {
  const view = s.selected;
  const byUid = name.startsWith('UID');
  const msgs: ThreadMessage[] = [];
  for await (const { seq, m, h } of matchingWithHeaders(s, a.search)) {
    msgs.push({
      n: byUid ? m.uid : seq,
      messageId: header(h, 'message-id'),
      references: header(h, 'references'),
      inReplyTo: header(h, 'in-reply-to'),
      subject: header(h, 'subject'),
      date: await sentDate(s, view.folder, m, h),
    });
  }
  const threads = renderThreads(thread(a.algorithm, msgs));
  s.send(`* THREAD${threads ? ' ' + threads : ''}\r\n`);
  await s.ok(tag, `${name} completed`, { allowExpunge: byUid });
}

// --- the group ----------------------------------------------------------------------

export const searchCommands: CommandGroup = {
  ...withUid('SEARCH', command({ states: SELECTED, parse: parseSearchArgs, run: runSearch })),
  ...withUid('SORT', command({ states: SELECTED, parse: parseSort, run: runSort })),
  ...withUid('THREAD', command({ states: SELECTED, parse: parseThread, run: runThread })),
};
