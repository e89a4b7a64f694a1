// SEARCH (RFC 9051 §6.4.4, ESEARCH RETURN options, CONDSTORE MODSEQ), SORT and THREAD
// (RFC 5256).
import {
  BadCharsetError,
  formatOrderedSequence,
  header,
  ParseError,
  parseSearch,
  parseSearchKeys,
  renderThreads,
  searchCharset,
  SUPPORTED_CHARSETS,
  thread,
  THREAD_ALGORITHMS,
  tokenText,
  usesModseq,
  type ArgReader,
  type SearchKey,
  type ThreadAlgorithm,
  type ThreadMessage,
} from '@mailyard/imap-core';
import type { SelectedContext } from '../context.js';
import { reply } from '../replies.js';
import { SearchEvaluator, withSavedNow } from '../search.js';
import { matchingWithHeaders, sentDate, SORT_KEYS, sortedMatches, type SortCriterion } from '../sort.js';
import { SELECTED, command, withUid, type CommandGroup } from './command.js';
import { enableCondstore } from './args.js';
import { contextCommands, openContext } from './search-context.js';

/** ESEARCH return options (RFC 4731 §3.1, PARTIAL from RFC 5267 §4.4). */
interface ReturnOptions {
  options: string[];
  /** PARTIAL's range of positions in the result, 1-based, inclusive. */
  partial: [number, number] | null;
}

interface SearchArgs {
  ret: ReturnOptions | null;
  key: SearchKey | null;
  badCharset: boolean;
}

// CONTEXT is RFC 5267 §4.2's hint that the result will be asked for again: taken, and
// nothing changes for it
const RETURN_OPTIONS = ['MIN', 'MAX', 'ALL', 'COUNT', 'SAVE', 'PARTIAL', 'CONTEXT'];

/** `RETURN (...)` before SEARCH's or SORT's other arguments, if there; none → null. */
function parseReturn(r: ArgReader, allowed: readonly string[]): ReturnOptions | null {
  const first = r.peek();
  if (first?.t !== 'atom' || first.v.toUpperCase() !== 'RETURN') return null;
  r.next();
  const list = r.list('return options');
  const options: string[] = [];
  let partial: [number, number] | null = null;
  for (let i = 0; i < list.length; i++) {
    const o = tokenText(list[i]!).toUpperCase();
    if (!allowed.includes(o)) throw new ParseError(`unknown RETURN option ${o.slice(0, 30)}`);
    if (o === 'PARTIAL') {
      // partial-range = number ":" number, both nz-number (RFC 5267 §4.4)
      const m = /^(\d{1,10}):(\d{1,10})$/.exec(tokenText(list[++i] ?? { t: 'nil', v: 'NIL' }));
      const a = Number(m?.[1]);
      const b = Number(m?.[2]);
      if (!m || !a || !b || a > 0xffffffff || b > 0xffffffff) throw new ParseError('bad PARTIAL range');
      partial = [Math.min(a, b), Math.max(a, b)];
    }
    options.push(o);
  }
  if (partial && options.includes('ALL')) throw new ParseError('PARTIAL and ALL together');
  if (!options.length) options.push('ALL');
  return { options, partial };
}

function parseSearchArgs(r: ArgReader): SearchArgs {
  // UPDATE: CONTEXT=SEARCH (RFC 5267 §4)
  const ret = parseReturn(r, [...RETURN_OPTIONS, 'UPDATE']);
  try {
    return { ret, key: parseSearch(r), badCharset: false };
  } catch (err) {
    if (err instanceof BadCharsetError) return { ret, key: null, badCharset: true };
    throw err;
  }
}

/**
 * `* ESEARCH` (RFC 4731 §3.1, RFC 5267 §3 and §4.4) for a result in its order: SEARCH's
 * ascending, SORT's sorted, so MIN and MAX are its first and last, and ALL and PARTIAL
 * keep the order.
 */
function esearch(
  tag: string,
  byUid: boolean,
  nums: number[],
  ret: ReturnOptions,
  modseq: number | null,
): string {
  const o = ret.options;
  const parts = [`* ESEARCH (TAG "${tag}")${byUid ? ' UID' : ''}`];
  if (o.includes('MIN') && nums.length) parts.push(`MIN ${nums[0]}`);
  if (o.includes('MAX') && nums.length) parts.push(`MAX ${nums[nums.length - 1]}`);
  if (o.includes('ALL') && nums.length) parts.push(`ALL ${formatOrderedSequence(nums)}`);
  if (ret.partial) {
    const [from, to] = ret.partial;
    const slice = nums.slice(from - 1, to);
    parts.push(`PARTIAL (${from}:${to} ${slice.length ? formatOrderedSequence(slice) : 'NIL'})`);
  }
  // the order is free (RFC 4731 §3.1); this is Dovecot's
  if (o.includes('COUNT')) parts.push(`COUNT ${nums.length}`);
  if (modseq !== null && nums.length) parts.push(`MODSEQ ${modseq}`);
  return parts.join(' ') + '\r\n';
}

/** RETURN options that ask for nothing to be sent now: SAVE, and CONTEXT's hint (RFC 5267 §4.2). */
const SILENT = new Set(['SAVE', 'CONTEXT']);

/** SAVE and nothing to send: only the tagged OK answers (RFC 5182 §2.4). */
function savedAlone(ret: ReturnOptions | null): boolean {
  return !!ret?.options.includes('SAVE') && ret.options.every((o) => SILENT.has(o));
}

/**
 * What RETURN (SAVE) keeps as `$` from a result in its order (RFC 5182 §2.1): with MIN or
 * MAX and no other result option, only the messages those name; with PARTIAL alone, its
 * window (as Dovecot); else every match.
 */
function toSave(result: readonly { uid: number }[], ret: ReturnOptions): Set<number> {
  const uids = result.map((r) => r.uid);
  const shown = ret.options.filter((o) => !SILENT.has(o) && o !== 'UPDATE');
  if (ret.partial && shown.length === 1) return new Set(uids.slice(ret.partial[0] - 1, ret.partial[1]));
  if (uids.length && shown.length && shown.every((o) => o === 'MIN' || o === 'MAX'))
    return new Set([
      ...(shown.includes('MIN') ? [uids[0]!] : []),
      ...(shown.includes('MAX') ? [uids.at(-1)!] : []),
    ]);
  return new Set(uids);
}

/**
 * Runs a SEARCH or SORT with `$` as the command found it (withSavedNow), and keeps what it
 * found as `$` when RETURN asks to SAVE. A SAVE answered NO empties `$` (RFC 5182 §2.1);
 * one refused as BAD (while parsing) never gets here and leaves it.
 */
async function searchSaving<R extends { uid: number }>(
  s: SelectedContext,
  ret: ReturnOptions | null,
  search: (savedNow: (key: SearchKey) => SearchKey) => Promise<{ key: SearchKey; rows: R[] }>,
): Promise<{ key: SearchKey; rows: R[] }> {
  const view = s.selected;
  const saved = view.saved;
  const save = ret?.options.includes('SAVE') ? ret : null;
  let found: { key: SearchKey; rows: R[] };
  try {
    found = await search((key) => withSavedNow(key, saved));
  } catch (err) {
    if (save) view.saved = new Set();
    throw err;
  }
  if (save) view.saved = toSave(found.rows, save);
  return found;
}

async function runSearch(s: SelectedContext, tag: string, a: SearchArgs, name: string): Promise<void> {
  const view = s.selected;
  const byUid = name.startsWith('UID');
  const { key, rows: hits } = await searchSaving(s, a.ret, async (savedNow) => {
    if (a.badCharset || !a.key) throw reply.badCharset(SUPPORTED_CHARSETS);
    const key = savedNow(a.key);
    const ev = new SearchEvaluator(view, view.folder, s.deps.cache);
    const hits: { seq: number; uid: number; modseq: number }[] = [];
    for (let i = 0; i < view.uids.length; i++) {
      const m = view.info(view.uids[i]!);
      if (!m) continue;
      if (await ev.matches(key, i + 1, m)) hits.push({ seq: i + 1, uid: m.uid, modseq: m.modseq });
    }
    return { key, rows: hits };
  });
  const modseq = usesModseq(key);
  const announce = modseq ? enableCondstore(s) : null;
  const nums = hits.map((h) => (byUid ? h.uid : h.seq));
  const maxMod = hits.reduce((x, h) => Math.max(x, h.modseq), 0);
  if (savedAlone(a.ret)) {
    // nothing but the tagged OK
  } else if (a.ret || s.enabled.rev2) {
    s.send(esearch(tag, byUid, nums, a.ret ?? { options: ['ALL'], partial: null }, modseq ? maxMod : null));
  } else {
    s.send(
      `* SEARCH${nums.length ? ' ' + nums.join(' ') : ''}${modseq && nums.length ? ` (MODSEQ ${maxMod})` : ''}\r\n`,
    );
  }
  if (announce) s.send(announce);
  let code: string | undefined;
  if (a.ret?.options.includes('UPDATE')) {
    const uids = hits.map((h) => h.uid);
    // RFC 5267 §4.2: past the limit the search is answered, and the client told no updates follow
    if (!openContext(view, { tag, byUid, key, sort: null, partial: a.ret.partial, uids }))
      code = `NOUPDATE "${tag}"`;
  }
  await s.ok(tag, `${name} completed`, { allowExpunge: byUid, code });
}

// --- SORT and THREAD (RFC 5256) --------------------------------------------------------

/** `<charset> <search-key>...` of SORT and THREAD (RFC 5256: the charset is required). */
function parseCharsetSearch(r: ArgReader): SearchArgs {
  const text = searchCharset(r.astring('charset'), r.utf8Names);
  if (!text) return { ret: null, key: null, badCharset: true };
  return { ret: null, key: parseSearchKeys(r, text), badCharset: false };
}

/** SORT's or THREAD's search keys, once the charset is known to be one we read. */
function searchKey(search: SearchArgs): SearchKey {
  if (search.badCharset || !search.key) throw reply.badCharset(SUPPORTED_CHARSETS);
  return search.key;
}

interface SortArgs {
  /** ESORT (RFC 5267 §3): the result as ESEARCH. */
  ret: ReturnOptions | null;
  criteria: SortCriterion[];
  search: SearchArgs;
}

function parseSort(r: ArgReader): SortArgs {
  // CONTEXT=SORT (RFC 5267 §4): UPDATE as for SEARCH; SAVE as for SEARCH, which RFC 5182
  // §2.1 extends to "any command based on SEARCH"
  const ret = parseReturn(r, [...RETURN_OPTIONS, 'UPDATE']);
  const list = r.list('sort criteria').map((t) => tokenText(t).toUpperCase());
  const criteria: SortCriterion[] = [];
  for (let i = 0; i < list.length; i++) {
    const reverse = list[i] === 'REVERSE';
    const key = reverse ? list[++i] : list[i];
    if (!key || !SORT_KEYS.includes(key)) throw new ParseError('bad sort criterion');
    criteria.push({ key, reverse });
  }
  if (!criteria.length) throw new ParseError('empty sort criteria');
  return { ret, criteria, search: parseCharsetSearch(r) };
}

async function runSort(s: SelectedContext, tag: string, a: SortArgs, name: string): Promise<void> {
  const byUid = name.startsWith('UID');
  const { key, rows } = await searchSaving(s, a.ret, async (savedNow) => {
    const key = savedNow(searchKey(a.search));
    return { key, rows: await sortedMatches(s.selected, s.deps.cache, key, a.criteria) };
  });
  const nums = rows.map((r) => (byUid ? r.uid : r.seq));
  if (savedAlone(a.ret)) {
    // nothing but the tagged OK
  } else if (a.ret) s.send(esearch(tag, byUid, nums, a.ret, null));
  else s.send(`* SORT${nums.map((n) => ' ' + n).join('')}\r\n`);
  let code: string | undefined;
  if (a.ret?.options.includes('UPDATE')) {
    const opened = openContext(s.selected, {
      tag,
      byUid,
      key,
      sort: a.criteria,
      partial: a.ret.partial,
      uids: rows.map((r) => r.uid),
    });
    if (!opened) code = `NOUPDATE "${tag}"`;
  }
  await s.ok(tag, `${name} completed`, { allowExpunge: byUid, code });
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
  const key = withSavedNow(searchKey(a.search), view.saved);
  for await (const { seq, m, h } of matchingWithHeaders(view, s.deps.cache, key)) {
    msgs.push({
      n: byUid ? m.uid : seq,
      messageId: header(h, 'message-id'),
      references: header(h, 'references'),
      inReplyTo: header(h, 'in-reply-to'),
      subject: header(h, 'subject'),
      date: await sentDate(s.deps.cache, view.folder, m, h),
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
  ...contextCommands,
};
