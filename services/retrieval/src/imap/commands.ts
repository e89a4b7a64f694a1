// The IMAP command table (RFC 9051 §6 and extensions). Each entry declares the states
// it is allowed in and reads its arguments by shape before the handler runs; handlers
// throw ImapReply for NO/BAD, rendered in one place by the session.
import {
  ArgReader,
  BadCharsetError,
  baseSubject,
  header,
  parseAddressList,
  encodeMutf7,
  formatSequence,
  ParseError,
  parseFetchItems,
  parseSearch,
  parseSearchKeys,
  SUPPORTED_CHARSETS,
  str,
  renderThreads,
  thread,
  THREAD_ALGORITHMS,
  tokenText,
  usesModseq,
  type FetchItem,
  type HeaderField,
  type ThreadAlgorithm,
  type ThreadMessage,
  type SearchKey,
  type SequenceSet,
  type Token,
} from '@mailyard/imap-core';
import {
  FolderError,
  SPECIAL_USE,
  type FlagChange,
  type MailFolder,
  type MessageInfo,
} from '@mailyard/mailstore';
import { EventKeys, type LearnEvent } from '@mailyard/contracts';
import { gatherFetch, planFetch, renderFetch, parseImapDate, SectionError, type Piece } from './fetch.js';
import { ImapReply, reply } from './replies.js';
import { ResponseBatch } from './response-batch.js';
import { SearchEvaluator } from './search.js';
import { SelectedMailbox } from './selected.js';
import type { ImapSession, ImapState } from './session.js';

export interface CommandDef<A> {
  states: readonly ImapState[];
  parse(r: ArgReader, s: ImapSession): A;
  run(s: ImapSession, tag: string, args: A, name: string): Promise<void>;
}

const ANY: ImapState[] = ['not-authenticated', 'authenticated', 'selected'];
const AUTHED: ImapState[] = ['authenticated', 'selected'];
const SELECTED: ImapState[] = ['selected'];
const NOAUTH: ImapState[] = ['not-authenticated'];

/** Messages whose headers are read together during FETCH. */
const FETCH_CHUNK = 500;
/**
 * FETCH output is written once this much is gathered: large enough that a listing
 * costs few syscalls, small enough that the client parses the first messages while
 * the next ones are rendered.
 */
const FETCH_FLUSH = 64 * 1024;

const def = <A>(d: CommandDef<A>): CommandDef<unknown> => d;
const none = (r: ArgReader) => r.end();

const SYSTEM_FLAGS = ['\\Answered', '\\Flagged', '\\Deleted', '\\Seen', '\\Draft'];

function mailboxName(s: ImapSession, name: string): string {
  return s.utf8 ? name : encodeMutf7(name);
}

function quoteName(s: ImapSession, name: string): string {
  return str(mailboxName(s, name), s.utf8).join('');
}

function folderErr(err: unknown): never {
  if (err instanceof FolderError) {
    switch (err.code) {
      case 'exists':
        throw reply.alreadyExists();
      case 'nonexistent':
        throw reply.nonexistent();
      case 'inbox':
        throw reply.cannot(err.message);
      case 'invalid':
        throw reply.cannot(err.message);
      case 'limit':
        throw reply.limit(err.message);
    }
  }
  throw err;
}

/** A name a client wants to give a folder (CREATE, RENAME): no LIST wildcards in it. */
function newFolderName(name: string): string {
  if (/[%*]/.test(name)) throw reply.wildcardName();
  return name;
}

function flagList(r: ArgReader): string[] {
  const t = r.next('flag list');
  const items = t.t === 'list' ? t.v : [t];
  return items.map((x) => {
    if (x.t !== 'atom') throw new ParseError('bad flag');
    const f = x.v;
    if (f.startsWith('\\')) {
      const sys = SYSTEM_FLAGS.find((s) => s.toLowerCase() === f.toLowerCase());
      if (!sys) throw new ParseError(`cannot set flag ${f}`);
      return sys;
    }
    if (!/^[^\s(){%*"\\\]]+$/.test(f)) throw new ParseError('bad keyword');
    return f;
  });
}

async function requireFolder(s: ImapSession, name: string, tryCreate = false): Promise<MailFolder> {
  let f: MailFolder;
  try {
    f = s.mailbox!.folder(name);
  } catch (err) {
    folderErr(err);
  }
  if (!(await f.exists())) throw tryCreate ? reply.tryCreate() : reply.nonexistent();
  return f;
}

// --- STATUS -----------------------------------------------------------------------

const STATUS_ITEMS = [
  'MESSAGES',
  'UIDNEXT',
  'UIDVALIDITY',
  'UNSEEN',
  'DELETED',
  'SIZE',
  'RECENT',
  'HIGHESTMODSEQ',
];

async function statusLine(s: ImapSession, name: string, items: string[]): Promise<string> {
  const f = await requireFolder(s, name);
  const snap = await f.snapshot();
  const vals = items.map((it) => {
    switch (it) {
      case 'MESSAGES':
        return `MESSAGES ${snap.messages.length}`;
      case 'UIDNEXT':
        return `UIDNEXT ${snap.uidNext}`;
      case 'UIDVALIDITY':
        return `UIDVALIDITY ${snap.validity}`;
      case 'UNSEEN':
        return `UNSEEN ${snap.messages.filter((m) => !m.flags.includes('\\Seen')).length}`;
      case 'DELETED':
        return `DELETED ${snap.messages.filter((m) => m.flags.includes('\\Deleted')).length}`;
      case 'SIZE':
        return `SIZE ${snap.messages.reduce((a, m) => a + Math.max(m.size, 0), 0)}`;
      case 'RECENT':
        return 'RECENT 0';
      default:
        return `HIGHESTMODSEQ ${snap.highestModseq}`;
    }
  });
  return `* STATUS ${quoteName(s, name)} (${vals.join(' ')})`;
}

function statusItems(list: Token[]): string[] {
  const items = list.map((t) => tokenText(t).toUpperCase());
  if (!items.length || items.some((i) => !STATUS_ITEMS.includes(i))) throw new ParseError('bad STATUS item');
  return items;
}

// --- LIST ---------------------------------------------------------------------------

interface ListArgs {
  select: Set<string>;
  ref: string;
  patterns: string[];
  ret: Set<string>;
  status: string[] | null;
  lsub: boolean;
}

function patternRegex(p: string): RegExp {
  const re = p
    .replace(/[.+?^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/%/g, '[^/]*');
  // INBOX matches case-insensitively
  return new RegExp(`^${re}$`, /^inbox/i.test(p) ? 'i' : '');
}

function parseList(r: ArgReader, lsub: boolean): ListArgs {
  const select = new Set<string>();
  if (!lsub) {
    const sel = r.optionalList();
    for (const t of sel ?? []) select.add(tokenText(t).toUpperCase());
  }
  const ref = r.astring('reference');
  const pt = r.next('mailbox pattern');
  const rawPatterns =
    pt.t === 'list'
      ? pt.v.map(tokenText)
      : pt.t === 'nil'
        ? []
        : [pt.t === 'string' ? pt.v.toString('utf8') : tokenText(pt)];
  const patterns = rawPatterns.map((p) => (r.utf8Names ? p : decodeName(p)));
  const ret = new Set<string>();
  let status: string[] | null = null;
  if (r.remaining) {
    if (r.atom('RETURN').toUpperCase() !== 'RETURN') throw new ParseError('expected RETURN');
    const opts = r.list('return options');
    for (let i = 0; i < opts.length; i++) {
      const o = tokenText(opts[i]!).toUpperCase();
      if (o === 'STATUS') {
        const next = opts[++i];
        if (next?.t !== 'list') throw new ParseError('STATUS needs a list');
        status = statusItems(next.v);
      } else ret.add(o);
    }
  }
  r.end();
  if (select.has('SUBSCRIBED')) ret.add('SUBSCRIBED');
  return { select, ref, patterns, ret, status, lsub };
}

function decodeName(p: string): string {
  try {
    return new ArgReader([{ t: 'atom', v: p }], false).mailbox();
  } catch {
    return p;
  }
}

async function runList(s: ImapSession, tag: string, a: ListArgs): Promise<void> {
  const cmd = a.lsub ? 'LSUB' : 'LIST';
  if (a.patterns.length === 1 && a.patterns[0] === '' && !a.lsub) {
    s.send(`* LIST (\\Noselect) "/" ""\r\n`);
    return s.ok(tag, 'LIST completed');
  }
  const folders = await s.mailbox!.list();
  const subs = new Set(await s.mailbox!.subscriptions());
  const names = folders.map((f) => f.name);
  const regs = a.patterns.map((p) => patternRegex(a.ref + p));
  const lines: string[] = [];
  const onlySubscribed = a.lsub || a.select.has('SUBSCRIBED');
  const onlySpecial = a.select.has('SPECIAL-USE');
  for (const f of folders) {
    if (!regs.some((re) => re.test(f.name))) continue;
    if (onlySubscribed && !subs.has(f.name)) continue;
    if (onlySpecial && !f.specialUse) continue;
    const attrs: string[] = [];
    const kids = names.some((n) => n.startsWith(f.name + '/'));
    attrs.push(kids ? '\\HasChildren' : '\\HasNoChildren');
    if (f.specialUse && (!a.lsub || a.ret.has('SPECIAL-USE'))) attrs.push(f.specialUse);
    if (a.ret.has('SUBSCRIBED') && subs.has(f.name)) attrs.push('\\Subscribed');
    lines.push(`* ${cmd} (${attrs.join(' ')}) "/" ${quoteName(s, f.name)}`);
    if (a.status) {
      try {
        lines.push(await statusLine(s, f.name, a.status));
      } catch {
        // a folder deleted meanwhile: no STATUS for it
      }
    }
  }
  if (lines.length) s.send(lines.join('\r\n') + '\r\n');
  return s.ok(tag, `${cmd} completed`);
}

// --- SELECT -------------------------------------------------------------------------

interface SelectArgs {
  name: string;
  condstore: boolean;
  qresync: { validity: number; modseq: number; known: SequenceSet | null } | null;
}

function parseSelect(r: ArgReader): SelectArgs {
  const name = r.mailbox();
  const a: SelectArgs = { name, condstore: false, qresync: null };
  const params = r.optionalList();
  for (let i = 0; params && i < params.length; i++) {
    const p = tokenText(params[i]!).toUpperCase();
    if (p === 'CONDSTORE') a.condstore = true;
    else if (p === 'QRESYNC') {
      const q = params[++i];
      if (q?.t !== 'list') throw new ParseError('QRESYNC needs parameters');
      const qr = new ArgReader(q.v);
      const validity = qr.number('uidvalidity');
      const modseq = qr.number('modseq');
      const known = qr.remaining && qr.peek()?.t === 'atom' ? qr.seqSet() : null;
      a.qresync = { validity, modseq, known };
    } else throw new ParseError(`unknown SELECT parameter ${p}`);
  }
  r.end();
  return a;
}

async function runSelect(s: ImapSession, tag: string, a: SelectArgs, name: string): Promise<void> {
  const readOnly = name === 'EXAMINE';
  if (s.selected && s.qresync) s.send('* OK [CLOSED] Previous mailbox closed\r\n');
  s.selected = null;
  s.state = 'authenticated';
  if (a.qresync && !s.qresync) throw reply.bad('QRESYNC is not enabled');
  if (a.condstore) s.enabled.add('CONDSTORE');
  const f = await requireFolder(s, a.name);
  // the folder's index file is read while the directories are
  void s.deps.cache.ready(f);
  const snap = await f.snapshot();
  void s.deps.cache.select(f, snap.messages);
  const view = new SelectedMailbox(f, a.name, readOnly, snap);
  const kws = new Set<string>();
  for (const m of snap.messages) for (const fl of m.flags) if (!fl.startsWith('\\')) kws.add(fl);
  const flags = [...SYSTEM_FLAGS, ...kws].join(' ');
  const lines = [
    `* FLAGS (${flags})`,
    `* OK [PERMANENTFLAGS (${readOnly ? '' : flags + ' \\*'})] Flags permitted`,
    `* ${snap.messages.length} EXISTS`,
  ];
  if (!s.rev2) {
    lines.push('* 0 RECENT');
    const unseen = snap.messages.findIndex((m) => !m.flags.includes('\\Seen'));
    if (unseen >= 0) lines.push(`* OK [UNSEEN ${unseen + 1}] First unseen`);
  }
  lines.push(
    `* OK [UIDVALIDITY ${snap.validity}] UIDs valid`,
    `* OK [UIDNEXT ${snap.uidNext}] Predicted next UID`,
    `* OK [HIGHESTMODSEQ ${snap.highestModseq}] Highest`,
  );
  if (s.rev2) lines.push(`* LIST () "/" ${quoteName(s, a.name)}`);
  // RFC 7162 §3.2.5: QRESYNC resynchronisation inside SELECT
  if (a.qresync && a.qresync.validity === snap.validity) {
    const { modseq, known } = a.qresync;
    const vanished = await f.vanishedSince(modseq);
    let gone = vanished ?? [];
    if (known) gone = gone.filter((u) => !view.seqOf(u));
    if (gone.length) lines.push(`* VANISHED (EARLIER) ${formatSequence(gone)}`);
    for (const m of snap.messages) {
      if (m.modseq > modseq) {
        lines.push(
          `* ${view.seqOf(m.uid)} FETCH (UID ${m.uid} FLAGS (${m.flags.join(' ')}) MODSEQ (${m.modseq}))`,
        );
      }
    }
  }
  s.send(lines.join('\r\n') + '\r\n');
  s.selected = view;
  s.state = 'selected';
  s.send(`${tag} OK [${readOnly ? 'READ-ONLY' : 'READ-WRITE'}] ${name} completed\r\n`);
}

// --- FETCH / STORE / SEARCH -----------------------------------------------------------

interface FetchArgs {
  set: SequenceSet;
  items: FetchItem[];
  changedSince: number | null;
  vanished: boolean;
}

function parseFetch(r: ArgReader): FetchArgs {
  const set = r.seqSet();
  const items = parseFetchItems(r.next('FETCH items'));
  let changedSince: number | null = null;
  let vanished = false;
  const mods = r.optionalList();
  for (let i = 0; mods && i < mods.length; i++) {
    const m = tokenText(mods[i]!).toUpperCase();
    if (m === 'CHANGEDSINCE') {
      const n = mods[++i];
      if (n?.t !== 'atom' || !/^\d+$/.test(n.v)) throw new ParseError('CHANGEDSINCE needs a number');
      changedSince = Number(n.v);
    } else if (m === 'VANISHED') vanished = true;
    else throw new ParseError(`unknown FETCH modifier ${m}`);
  }
  r.end();
  return { set, items, changedSince, vanished };
}

async function runFetch(s: ImapSession, tag: string, a: FetchArgs, name: string): Promise<void> {
  const byUid = name.startsWith('UID');
  const view = s.selected!;
  if (a.vanished && (!byUid || !s.qresync || a.changedSince === null))
    throw reply.bad('VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE');
  if (a.changedSince !== null) s.enabled.add('CONDSTORE');
  const items = [...a.items];
  if (a.changedSince !== null && !items.some((i) => i.k === 'MODSEQ')) items.push({ k: 'MODSEQ' });
  let msgs = view.resolve(a.set, byUid);
  if (a.changedSince !== null) msgs = msgs.filter(({ m }) => m.modseq > a.changedSince!);
  if (a.vanished) {
    const gone = (await view.folder.vanishedSince(a.changedSince!)) ?? [];
    if (gone.length) s.send(`* VANISHED (EARLIER) ${formatSequence(gone)}\r\n`);
  }
  // RFC 9051 §6.4.5: BODY[] (not PEEK) sets \Seen
  const setsSeen = items.some(
    (i) =>
      (i.k === 'SECTION' && !i.peek && i.kind !== 'BINARY.SIZE') || i.k === 'RFC822' || i.k === 'RFC822.TEXT',
  );
  if (setsSeen && !view.readOnly) {
    const unseen = msgs.filter(({ m }) => !m.flags.includes('\\Seen'));
    if (unseen.length) {
      const res = await view.folder.store(
        unseen.map(({ m }) => ({ uid: m.uid, op: 'add', flags: ['\\Seen'] })),
      );
      const byUidMap = new Map(res.snapshot.messages.map((m) => [m.uid, m]));
      msgs = msgs.map(({ seq, m }) => ({ seq, m: byUidMap.get(m.uid) ?? m }));
      if (!items.some((i) => i.k === 'FLAGS')) items.push({ k: 'FLAGS' });
      for (const { m } of msgs) view.told_(m);
      s.changed(view.name);
    }
  }
  const ctx = { folder: view.folder, cache: s.deps.cache, utf8: s.utf8, condstore: s.condstore, byUid };
  const plan = planFetch(items);
  await ctx.cache.ready(view.folder);
  // responses are gathered and written in batches of FETCH_FLUSH bytes with one writev:
  // one socket write per message costs more than rendering it
  const batch = new ResponseBatch();
  const push = (p: Piece) => batch.push(p);
  const flush = async () => {
    const bufs = batch.take();
    if (!bufs.length) return;
    s.conn.writeMany(bufs);
    await s.conn.drain();
  };
  // headers for ENVELOPE (and INTERNALDATE, HEADER.FIELDS the index keeps) are read, or
  // found in the index, a few hundred messages at a time: the files are read together,
  // and the first responses leave early
  const wantsHeaders = plan.envelope || plan.date || plan.headerFields;
  for (let k = 0; k < msgs.length; k += FETCH_CHUNK) {
    const part = msgs.slice(k, k + FETCH_CHUNK);
    if (wantsHeaders)
      await ctx.cache.headers(
        view.folder,
        part.map((x) => x.m),
      );
    for (const { seq, m } of part) {
      let body;
      try {
        const got = gatherFetch(ctx, plan, m);
        body = renderFetch(ctx, plan, m, items, got instanceof Promise ? await got : got);
      } catch (err) {
        if (err instanceof SectionError) {
          await flush();
          throw new ImapReply('NO', err.message === 'UNKNOWN-CTE' ? 'UNKNOWN-CTE' : null, err.message);
        }
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as Error).name === 'MessageGoneError')
          continue;
        await flush();
        throw err;
      }
      // text pieces joined first: one copy into the batch per message, not per item
      let line = `* ${seq} FETCH `;
      for (const c of body) {
        if (typeof c === 'string') line += c;
        else {
          push(line);
          line = '';
          push(c);
        }
      }
      push(line + '\r\n');
      if (batch.length >= FETCH_FLUSH) await flush();
    }
  }
  await flush();
  await s.ok(tag, `${name} completed`, { allowExpunge: byUid });
}

interface StoreArgs {
  set: SequenceSet;
  unchangedSince: number | null;
  op: 'add' | 'remove' | 'set';
  silent: boolean;
  flags: string[];
}

function parseStore(r: ArgReader): StoreArgs {
  const set = r.seqSet();
  let unchangedSince: number | null = null;
  const mods = r.optionalList();
  if (mods) {
    if (mods.length !== 2 || tokenText(mods[0]!).toUpperCase() !== 'UNCHANGEDSINCE')
      throw new ParseError('bad STORE modifier');
    const n = tokenText(mods[1]!);
    if (!/^\d+$/.test(n)) throw new ParseError('bad UNCHANGEDSINCE');
    unchangedSince = Number(n);
  }
  const item = r.atom('STORE item').toUpperCase();
  const m = /^([+-]?)FLAGS(\.SILENT)?$/.exec(item);
  if (!m) throw new ParseError('bad STORE item');
  const flags = flagList(r);
  r.end();
  return {
    set,
    unchangedSince,
    op: m[1] === '+' ? 'add' : m[1] === '-' ? 'remove' : 'set',
    silent: !!m[2],
    flags,
  };
}

async function runStore(s: ImapSession, tag: string, a: StoreArgs, name: string): Promise<void> {
  const view = s.selected!;
  const byUid = name.startsWith('UID');
  if (view.readOnly) throw reply.readOnly();
  if (a.unchangedSince !== null) s.enabled.add('CONDSTORE');
  const msgs = view.resolve(a.set, byUid);
  const changes: FlagChange[] = msgs.map(({ m }) => ({ uid: m.uid, op: a.op, flags: a.flags }));
  const res = await view.folder.store(changes, a.unchangedSince ?? undefined);
  const now = new Map(res.snapshot.messages.map((m) => [m.uid, m]));
  const changed = new Set(res.changed.map((m) => m.uid));
  const lines: string[] = [];
  for (const { seq, m: old } of msgs) {
    const m = now.get(old.uid);
    if (!m) continue;
    const wasChanged = changed.has(m.uid);
    // RFC 7162 §3.2: with UNCHANGEDSINCE, the MODSEQ of changed messages is reported even when SILENT
    if (!a.silent || (wasChanged && a.unchangedSince !== null)) {
      const parts = [];
      if (byUid) parts.push(`UID ${m.uid}`);
      if (!a.silent) parts.push(`FLAGS (${m.flags.join(' ')})`);
      if (s.condstore) parts.push(`MODSEQ (${m.modseq})`);
      lines.push(`* ${seq} FETCH (${parts.join(' ')})`);
    }
    view.told_(m);
  }
  if (lines.length) s.send(lines.join('\r\n') + '\r\n');
  if (changed.size) s.changed(view.name);
  const code = res.failed.length
    ? `MODIFIED ${formatSequence(byUid ? res.failed : res.failed.map((u) => view.seqOf(u)))}`
    : undefined;
  await s.ok(tag, `${name} completed`, { allowExpunge: byUid, code });
}

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

async function runSearch(s: ImapSession, tag: string, a: SearchArgs, name: string): Promise<void> {
  if (a.badCharset || !a.key) throw reply.badCharset(SUPPORTED_CHARSETS);
  const view = s.selected!;
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
  if (a.ret || s.rev2) {
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
async function prefetchHeaders(s: ImapSession, view: SelectedMailbox): Promise<void> {
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
  s: ImapSession,
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
  s: ImapSession,
  search: SearchArgs,
): AsyncGenerator<{ seq: number; m: MessageInfo; h: HeaderField[] }> {
  if (search.badCharset || !search.key) throw reply.badCharset(SUPPORTED_CHARSETS);
  const view = s.selected!;
  const ev = new SearchEvaluator(view, view.folder, s.deps.cache);
  await prefetchHeaders(s, view);
  for (let i = 0; i < view.uids.length; i++) {
    const m = view.info(view.uids[i]!);
    if (!m || !(await ev.matches(search.key, i + 1, m))) continue;
    yield { seq: i + 1, m, h: (await s.deps.cache.header(view.folder, m)).fields };
  }
}

const SORT_KEYS = ['ARRIVAL', 'CC', 'DATE', 'FROM', 'SIZE', 'SUBJECT', 'TO'];

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

async function runSort(s: ImapSession, tag: string, a: SortArgs, name: string): Promise<void> {
  const view = s.selected!;
  const byUid = name.startsWith('UID');
  const rows: { seq: number; uid: number; keys: (string | number)[] }[] = [];
  for await (const { seq, m, h } of matchingWithHeaders(s, a.search)) {
    const keys: (string | number)[] = [];
    for (const c of a.criteria) {
      switch (c.key) {
        case 'ARRIVAL':
          keys.push(await s.deps.cache.internalDate(view.folder, m));
          break;
        case 'DATE':
          keys.push(await sentDate(s, view.folder, m, h));
          break;
        case 'SIZE':
          keys.push(await view.folder.sizeOf(m));
          break;
        case 'SUBJECT':
          keys.push(baseSubject(header(h, 'subject') ?? ''));
          break;
        default: {
          const first = parseAddressList(header(h, c.key.toLowerCase()) ?? '').find((x) => !x.group);
          keys.push((first?.mailbox ?? '').toLowerCase());
        }
      }
    }
    rows.push({ seq, uid: m.uid, keys });
  }
  rows.sort((x, y) => {
    for (let k = 0; k < a.criteria.length; k++) {
      const p = x.keys[k]!;
      const q = y.keys[k]!;
      const cmp = p < q ? -1 : p > q ? 1 : 0;
      if (cmp) return a.criteria[k]!.reverse ? -cmp : cmp;
    }
    return x.seq - y.seq;
  });
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

async function runThread(s: ImapSession, tag: string, a: ThreadArgs, name: string): Promise<void> {
  const view = s.selected!;
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

// --- COPY / MOVE / EXPUNGE ----------------------------------------------------------

async function expungeDeleted(s: ImapSession, uids: Set<number> | null): Promise<number[]> {
  const view = s.selected!;
  const snap = await view.folder.snapshot();
  const del = snap.messages
    .filter((m) => m.flags.includes('\\Deleted') && (!uids || uids.has(m.uid)))
    .map((m) => m.uid);
  if (!del.length) return [];
  const removed = await view.folder.expunge(del);
  if (removed.length) s.changed(view.name);
  return removed;
}

/** Moving into Junk trains the spam filter; out of Junk (except to Trash), as ham. One LearnEvent per message. */
async function learnEvents(
  s: ImapSession,
  from: string,
  to: string,
  msgs: MessageInfo[],
  src: MailFolder,
): Promise<void> {
  const isJunk = (n: string) => SPECIAL_USE[n] === '\\Junk';
  const kind =
    isJunk(to) && !isJunk(from)
      ? 'spam'
      : isJunk(from) && !isJunk(to) && SPECIAL_USE[to] !== '\\Trash'
        ? 'ham'
        : null;
  if (!kind) return;
  const key = kind === 'spam' ? EventKeys.learnSpam : EventKeys.learnHam;
  for (const m of msgs) {
    try {
      const data = await src.read(m);
      const ev: LearnEvent = {
        v: 1,
        account: s.user!,
        // delivery's file names carry the queue id: <sec>.Q<queueid>R<hash>.<host>
        queueId: /\.Q([^R.]+)R/.exec(m.base)?.[1] ?? null,
        message: data.toString('base64'),
      };
      await s.deps.bus.publishEvent(key, ev);
    } catch (err) {
      s.log.warn({ err, kind }, 'learn event not published');
    }
  }
  s.log.info({ account: s.user, kind, count: msgs.length }, 'learn events published');
}

interface CopyArgs {
  set: SequenceSet;
  dest: string;
}

async function runCopy(s: ImapSession, tag: string, a: CopyArgs, name: string): Promise<void> {
  const view = s.selected!;
  const byUid = name.startsWith('UID');
  const move = name.endsWith('MOVE');
  if (move && view.readOnly) throw reply.readOnly();
  const dest = await requireFolder(s, a.dest, true);
  const msgs = view.resolve(a.set, byUid);
  if (!msgs.length) {
    return s.ok(tag, `${name} completed, nothing to do`, { allowExpunge: byUid });
  }
  await quotaCheck(
    s,
    msgs.reduce((x, { m }) => x + Math.max(m.size, 0), 0),
  );
  const res = await dest.copyFrom(
    view.folder,
    msgs.map(({ m }) => m),
  );
  const code = `COPYUID ${res.validity} ${res.pairs.map(([x]) => x).join(',')} ${res.pairs.map(([, y]) => y).join(',')}`;
  s.changed(a.dest);
  await learnEvents(
    s,
    view.name,
    a.dest,
    msgs.map(({ m }) => m),
    view.folder,
  );
  if (!move) return s.ok(tag, `${name} completed`, { allowExpunge: byUid, code });
  // RFC 6851 §4.3: COPYUID in an untagged OK before the expunges
  s.send(`* OK [${code}] Moved\r\n`);
  await view.folder.expunge(msgs.map(({ m }) => m.uid));
  s.changed(view.name);
  await s.ok(tag, `${name} completed`, { allowExpunge: true });
}

async function quotaCheck(s: ImapSession, adding: number): Promise<void> {
  const limit = await s.deps.quotas.limit(s.user!);
  if (!limit) return;
  const { bytes } = await s.mailbox!.usage(limit);
  if (bytes + adding > limit) throw reply.overQuota();
}

// --- APPEND -------------------------------------------------------------------------

interface AppendArgs {
  name: string;
  flags: string[];
  date: Date;
  data: Buffer;
}

function parseAppend(r: ArgReader): AppendArgs {
  const name = r.mailbox();
  let flags: string[] = [];
  if (r.peek()?.t === 'list') flags = flagList(r);
  let date = new Date();
  const t = r.peek();
  if (t?.t === 'string' && !t.literal) {
    r.next();
    const d = parseImapDate(t.v.toString());
    if (!d) throw new ParseError('bad date-time');
    date = d;
  }
  const lit = r.next('message literal');
  if (lit.t !== 'string' || !lit.literal) throw new ParseError('APPEND needs a literal');
  r.end();
  return { name, flags, date, data: lit.v };
}

// --- the table ----------------------------------------------------------------------

export const COMMANDS: Record<string, CommandDef<unknown>> = {
  CAPABILITY: def({
    states: ANY,
    parse: none,
    async run(s, tag) {
      s.send(`* CAPABILITY ${s.capabilities()}\r\n`);
      await s.ok(tag, 'CAPABILITY completed');
    },
  }),
  NOOP: def({
    states: ANY,
    parse: none,
    run: (s, tag) => s.ok(tag, 'NOOP completed'),
  }),
  CHECK: def({
    states: SELECTED,
    parse: none,
    run: (s, tag) => s.ok(tag, 'CHECK completed'),
  }),
  LOGOUT: def({
    states: ANY,
    parse: none,
    async run(s, tag) {
      s.state = 'logout';
      s.close(`* BYE Logging out\r\n${tag} OK LOGOUT completed\r\n`);
    },
  }),
  ID: def({
    states: ANY,
    parse: (r) => {
      r.next('ID parameters');
      r.end();
    },
    async run(s, tag) {
      s.send('* ID ("name" "Mailyard" "vendor" "Mailyard")\r\n');
      await s.ok(tag, 'ID completed');
    },
  }),
  STARTTLS: def({
    states: NOAUTH,
    parse: none,
    async run(s, tag) {
      if (s.conn.secure) throw reply.bad('TLS already active');
      s.send(`${tag} OK Begin TLS negotiation now\r\n`);
      await s.startTls();
    },
  }),
  COMPRESS: def({
    states: AUTHED,
    parse: (r) => {
      const mech = r.atom('mechanism').toUpperCase();
      r.end();
      return mech;
    },
    run(s, tag, mech: string) {
      // RFC 4978 §3
      if (mech !== 'DEFLATE' || !s.deps.config.imap_compress)
        throw reply.bad(`Unsupported compression mechanism ${mech}`);
      if (s.conn.compressed) throw new ImapReply('NO', 'COMPRESSIONACTIVE', 'DEFLATE active via COMPRESS');
      s.startCompression(tag);
      return Promise.resolve();
    },
  }),
  LOGIN: def({
    states: NOAUTH,
    parse: (r) => {
      const user = r.astring('user name');
      const pass = r.astring('password');
      r.end();
      return { user, pass };
    },
    async run(s, tag, a: { user: string; pass: string }) {
      await s.login(a.user, a.pass);
      s.send(`${tag} OK [CAPABILITY ${s.capabilities()}] Logged in\r\n`);
    },
  }),
  AUTHENTICATE: def({
    states: NOAUTH,
    parse: (r) => {
      const mech = r.atom('mechanism').toUpperCase();
      const ir = r.remaining ? r.astring('initial response') : null;
      r.end();
      return { mech, ir };
    },
    async run(s, tag, a: { mech: string; ir: string | null }) {
      if (a.mech !== 'PLAIN') throw new ImapReply('NO', 'CANNOT', 'Unsupported mechanism');
      if (!s.plaintextAllowed()) throw reply.privacyRequired();
      await s.startSasl(tag, a.ir);
    },
  }),
  ENABLE: def({
    states: AUTHED,
    parse: (r) => {
      const caps: string[] = [];
      while (r.remaining) caps.push(r.atom('capability').toUpperCase());
      if (!caps.length) throw new ParseError('ENABLE needs a capability');
      return caps;
    },
    async run(s, tag, caps: string[]) {
      const ok = caps.filter((c) => ['CONDSTORE', 'QRESYNC', 'UTF8=ACCEPT', 'IMAP4REV2'].includes(c));
      const fresh = ok.filter((c) => !s.enabled.has(c));
      for (const c of ok) s.enabled.add(c);
      if (ok.includes('QRESYNC')) s.enabled.add('CONDSTORE');
      s.send(
        `* ENABLED${fresh.length ? ' ' + fresh.map((c) => (c === 'IMAP4REV2' ? 'IMAP4rev2' : c)).join(' ') : ''}\r\n`,
      );
      await s.ok(tag, 'ENABLE completed');
    },
  }),
  NAMESPACE: def({
    states: AUTHED,
    parse: none,
    async run(s, tag) {
      s.send('* NAMESPACE (("" "/")) NIL NIL\r\n');
      await s.ok(tag, 'NAMESPACE completed');
    },
  }),
  SELECT: def({ states: AUTHED, parse: parseSelect, run: runSelect }),
  EXAMINE: def({ states: AUTHED, parse: parseSelect, run: runSelect }),
  CREATE: def({
    states: AUTHED,
    parse: (r) => {
      const n = r.mailbox().replace(/\/$/, '');
      r.end();
      return n;
    },
    async run(s, tag, name: string) {
      await s.mailbox!.create(newFolderName(name)).catch(folderErr);
      await s.ok(tag, 'CREATE completed');
    },
  }),
  DELETE: def({
    states: AUTHED,
    parse: (r) => {
      const n = r.mailbox();
      r.end();
      return n;
    },
    async run(s, tag, name: string) {
      if (s.selected?.name === name) throw reply.cannot('Mailbox is selected');
      await s.mailbox!.delete(name).catch(folderErr);
      const subs = await s.mailbox!.subscriptions();
      if (subs.includes(name)) await s.mailbox!.setSubscriptions(subs.filter((x) => x !== name));
      await s.ok(tag, 'DELETE completed');
    },
  }),
  RENAME: def({
    states: AUTHED,
    parse: (r) => {
      const from = r.mailbox();
      const to = r.mailbox();
      r.end();
      return { from, to };
    },
    async run(s, tag, a: { from: string; to: string }) {
      await s.mailbox!.rename(a.from, newFolderName(a.to)).catch(folderErr);
      await s.ok(tag, 'RENAME completed');
    },
  }),
  SUBSCRIBE: def({
    states: AUTHED,
    parse: (r) => {
      const n = r.mailbox();
      r.end();
      return n;
    },
    async run(s, tag, name: string) {
      await requireFolder(s, name);
      const subs = await s.mailbox!.subscriptions();
      if (!subs.includes(name)) await s.mailbox!.setSubscriptions([...subs, name]);
      await s.ok(tag, 'SUBSCRIBE completed');
    },
  }),
  UNSUBSCRIBE: def({
    states: AUTHED,
    parse: (r) => {
      const n = r.mailbox();
      r.end();
      return n;
    },
    async run(s, tag, name: string) {
      const subs = await s.mailbox!.subscriptions();
      await s.mailbox!.setSubscriptions(subs.filter((x) => x !== name));
      await s.ok(tag, 'UNSUBSCRIBE completed');
    },
  }),
  LIST: def({ states: AUTHED, parse: (r) => parseList(r, false), run: runList }),
  LSUB: def({ states: AUTHED, parse: (r) => parseList(r, true), run: runList }),
  STATUS: def({
    states: AUTHED,
    parse: (r) => {
      const name = r.mailbox();
      const items = statusItems(r.list('status items'));
      r.end();
      return { name, items };
    },
    async run(s, tag, a: { name: string; items: string[] }) {
      s.send((await statusLine(s, a.name, a.items)) + '\r\n');
      await s.ok(tag, 'STATUS completed');
    },
  }),
  APPEND: def({
    states: AUTHED,
    parse: parseAppend,
    async run(s, tag, a: AppendArgs) {
      if (a.data.length > s.deps.config.message_size_limit) throw reply.tooBig();
      const f = await requireFolder(s, a.name, true);
      await quotaCheck(s, a.data.length);
      const r = await f.append(a.data, a.flags, a.date);
      s.changed(a.name);
      await s.ok(tag, 'APPEND completed', { code: `APPENDUID ${r.validity} ${r.uid}` });
    },
  }),
  IDLE: def({
    states: AUTHED,
    parse: none,
    async run(s, tag) {
      s.startIdle(tag);
    },
  }),
  GETQUOTAROOT: def({
    states: AUTHED,
    parse: (r) => {
      const n = r.mailbox();
      r.end();
      return n;
    },
    async run(s, tag, name: string) {
      await requireFolder(s, name);
      s.send(`* QUOTAROOT ${quoteName(s, name)} ""\r\n${await quotaLine(s)}\r\n`);
      await s.ok(tag, 'GETQUOTAROOT completed');
    },
  }),
  GETQUOTA: def({
    states: AUTHED,
    parse: (r) => {
      const root = r.astring('quota root');
      r.end();
      return root;
    },
    async run(s, tag, root: string) {
      if (root !== '') throw new ImapReply('NO', 'NONEXISTENT', 'No such quota root');
      s.send((await quotaLine(s)) + '\r\n');
      await s.ok(tag, 'GETQUOTA completed');
    },
  }),
  SETQUOTA: def({
    states: AUTHED,
    parse: () => undefined,
    run: async () => {
      throw reply.noPerm('Quotas are set by the administrator');
    },
  }),
  CLOSE: def({
    states: SELECTED,
    parse: none,
    async run(s, tag) {
      // RFC 9051 §6.4.1: silently expunge \Deleted, no EXPUNGE responses
      if (!s.selected!.readOnly) await expungeDeleted(s, null);
      s.selected = null;
      s.state = 'authenticated';
      await s.ok(tag, 'CLOSE completed');
    },
  }),
  UNSELECT: def({
    states: SELECTED,
    parse: none,
    async run(s, tag) {
      s.selected = null;
      s.state = 'authenticated';
      await s.ok(tag, 'UNSELECT completed');
    },
  }),
  EXPUNGE: def({
    states: SELECTED,
    parse: none,
    async run(s, tag) {
      if (s.selected!.readOnly) throw reply.readOnly();
      await expungeDeleted(s, null);
      await s.ok(tag, 'EXPUNGE completed');
    },
  }),
  'UID EXPUNGE': def({
    states: SELECTED,
    parse: (r) => {
      const set = r.seqSet();
      r.end();
      return set;
    },
    async run(s, tag, set: SequenceSet) {
      if (s.selected!.readOnly) throw reply.readOnly();
      const uids = new Set(s.selected!.resolve(set, true).map(({ m }) => m.uid));
      await expungeDeleted(s, uids);
      await s.ok(tag, 'UID EXPUNGE completed');
    },
  }),
  FETCH: def({ states: SELECTED, parse: parseFetch, run: runFetch }),
  'UID FETCH': def({ states: SELECTED, parse: parseFetch, run: runFetch }),
  STORE: def({ states: SELECTED, parse: parseStore, run: runStore }),
  'UID STORE': def({ states: SELECTED, parse: parseStore, run: runStore }),
  SEARCH: def({ states: SELECTED, parse: parseSearchArgs, run: runSearch }),
  'UID SEARCH': def({ states: SELECTED, parse: parseSearchArgs, run: runSearch }),
  SORT: def({ states: SELECTED, parse: parseSort, run: runSort }),
  'UID SORT': def({ states: SELECTED, parse: parseSort, run: runSort }),
  THREAD: def({ states: SELECTED, parse: parseThread, run: runThread }),
  'UID THREAD': def({ states: SELECTED, parse: parseThread, run: runThread }),
  ...Object.fromEntries(
    ['COPY', 'UID COPY', 'MOVE', 'UID MOVE'].map((n) => [
      n,
      def({
        states: SELECTED,
        parse: (r): CopyArgs => {
          const set = r.seqSet();
          const dest = r.mailbox();
          r.end();
          return { set, dest };
        },
        run: runCopy,
      }),
    ]),
  ),
};

async function quotaLine(s: ImapSession): Promise<string> {
  const limit = await s.deps.quotas.limit(s.user!);
  if (!limit) return '* QUOTA "" ()';
  const { bytes } = await s.mailbox!.usage(limit);
  // RFC 9208 §5.1: STORAGE in units of 1024 octets
  return `* QUOTA "" (STORAGE ${Math.ceil(bytes / 1024)} ${Math.floor(limit / 1024)})`;
}
