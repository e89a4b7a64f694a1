// Commands on messages (RFC 9051 §6.3.12, §6.4): APPEND, FETCH, STORE, COPY, MOVE,
// EXPUNGE, and leaving the selected state (CLOSE, UNSELECT).
import {
  formatOrderedSequence,
  formatSequence,
  ParseError,
  parseFetchItems,
  tokenText,
  type ArgReader,
  type FetchItem,
  type SequenceSet,
} from '@mailyard/imap-core';
import {
  findUid,
  InternalDateError,
  MessageGoneError,
  SPECIAL_USE,
  type FlagChange,
  type MailFolder,
  type MessageInfo,
} from '@mailyard/mailstore';
import { holdOnFailure } from '@mailyard/bus';
import { EventKeys, type LearnEvent } from '@mailyard/contracts';
import type { AuthedContext, OkOptions, SelectedContext } from '../context.js';
import {
  FETCH_CHUNK,
  gatherFetch,
  parseImapDate,
  planFetch,
  renderFetch,
  UnknownCteError,
  type Piece,
} from '../fetch.js';
import { reply } from '../replies.js';
import { ResponseBatch, ResponseCutError } from '../response-batch.js';
import { enableCondstore, flagList, none } from './args.js';
import { AUTHED, SELECTED, command, withUid, type CommandGroup } from './command.js';
import { assemble, parseCatenate, type CatPart } from './catenate.js';
import { requireFolder } from './folders.js';

/**
 * FETCH output is written once this much is gathered: large enough that a listing
 * costs few syscalls, small enough that the client parses the first messages while
 * the next ones are rendered.
 */
const FETCH_FLUSH = 64 * 1024;

// --- FETCH / STORE ------------------------------------------------------------------

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

async function runFetch(s: SelectedContext, tag: string, a: FetchArgs, name: string): Promise<void> {
  const byUid = name.startsWith('UID');
  const view = s.selected;
  if (a.vanished && (!byUid || !s.enabled.qresync || a.changedSince === null))
    throw reply.bad('VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE');
  const announce =
    a.changedSince !== null || a.items.some((i) => i.k === 'MODSEQ') ? enableCondstore(s) : null;
  const items = [...a.items];
  if (a.changedSince !== null && !items.some((i) => i.k === 'MODSEQ')) items.push({ k: 'MODSEQ' });
  if (view.outOfRange(a.set, byUid)) throw reply.invalidMessageSet();
  let msgs = view.resolve(a.set, byUid);
  if (a.changedSince !== null) msgs = msgs.filter(({ m }) => m.modseq > a.changedSince!);
  if (a.vanished) {
    const vanished = await view.vanishedEarlier(a.changedSince!, a.set);
    if (vanished) s.send(`${vanished}\r\n`);
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
        undefined,
        view.validity,
      );
      const byUidMap = new Map(res.snapshot.messages.map((m) => [m.uid, m]));
      msgs = msgs.map(({ seq, m }) => ({ seq, m: byUidMap.get(m.uid) ?? m }));
      if (!items.some((i) => i.k === 'FLAGS')) items.push({ k: 'FLAGS' });
      // RFC 7162 §3.1: the flags a FETCH set are told with their MODSEQ once CONDSTORE is on
      // (in the same response; Dovecot sends a second FETCH with MODSEQ alone)
      if (s.enabled.condstore && !items.some((i) => i.k === 'MODSEQ')) items.push({ k: 'MODSEQ' });
      // with QRESYNC with its UID too, as STORE tells it (RFC 7162 §3.2.4)
      if (s.enabled.qresync && !items.some((i) => i.k === 'UID')) items.push({ k: 'UID' });
      for (const { m } of msgs) view.told_(m);
      s.changed(view.name);
    }
  }
  const ctx = {
    folder: view.folder,
    cache: s.deps.cache,
    utf8: s.enabled.utf8,
    rev2: s.enabled.rev2,
    // RFC 7162 §3.1: a solicited FETCH carries MODSEQ only when it asked for it, gave
    // CHANGEDSINCE or set \Seen (those add the MODSEQ item above)
    unsolicitedModseq: false,
    byUid,
    flags: (m: MessageInfo) => view.flags(m),
  };
  const plan = planFetch(items);
  await ctx.cache.ready(view.folder);
  // responses are gathered and written in batches of FETCH_FLUSH bytes with one writev:
  // one socket write per message costs more than rendering it
  const batch = new ResponseBatch();
  const push = (p: Piece) => batch.push(p);
  // partial: the batch ends inside a message's response, which the next one finishes
  const flush = async (partial = false) => {
    const bufs = batch.take();
    if (bufs.length) await s.sendBatch(bufs, partial);
  };
  // headers for ENVELOPE (and INTERNALDATE, HEADER.FIELDS the index keeps) are read, or
  // found in the index, a few hundred messages at a time: the files are read together,
  // and the first responses leave early
  const wantsHeaders = plan.envelope || plan.date || plan.headerFields;
  let skipped = false;
  for (let k = 0; k < msgs.length; k += FETCH_CHUNK) {
    const part = msgs.slice(k, k + FETCH_CHUNK);
    if (wantsHeaders)
      await ctx.cache.headers(
        view.folder,
        part.map((x) => x.m),
      );
    else if (plan.size)
      await ctx.cache.sentSizes(
        view.folder,
        part.map((x) => x.m),
      );
    for (const { seq, m } of part) {
      let body;
      try {
        const got = gatherFetch(ctx, plan, m);
        body = renderFetch(ctx, plan, m, items, got instanceof Promise ? await got : got);
      } catch (err) {
        if (err instanceof UnknownCteError) {
          await flush();
          throw reply.unknownCte();
        }
        // expunged by another session since this one last heard: RFC 2180 §4.1.3 lets
        // the others be answered; the tagged reply says some were left out (RFC 5530
        // EXPUNGEISSUED), as Dovecot's does
        if (err instanceof MessageGoneError || (err as NodeJS.ErrnoException).code === 'ENOENT') {
          skipped = true;
          continue;
        }
        await flush();
        throw err;
      }
      // text pieces joined first: one copy into the batch per message, not per item; sent
      // as the batch fills, also within a message that names a section many times
      let line = `* ${seq} FETCH `;
      let begun = false;
      try {
        for (const c of body) {
          if (typeof c === 'string') line += c;
          else {
            push(line);
            line = '';
            push(c);
            if (batch.length >= FETCH_FLUSH) {
              await flush(true);
              begun = true;
            }
          }
        }
      } catch (err) {
        throw begun ? new ResponseCutError(err) : err;
      }
      push(line + '\r\n');
      if (batch.length >= FETCH_FLUSH) await flush();
    }
  }
  await flush();
  if (announce) s.send(announce);
  await s.ok(tag, skipped ? `Some messages were expunged; ${name} completed` : `${name} completed`, {
    allowExpunge: byUid,
    ...(skipped ? { code: 'EXPUNGEISSUED' } : {}),
  });
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

/** `flags` as a STORE of `a` leaves them, by name without case (as the store compares them). */
function storedOn(flags: readonly string[], a: StoreArgs): Set<string> {
  const out = new Set(a.op === 'set' ? [] : flags.map((f) => f.toLowerCase()));
  for (const f of a.flags) {
    if (a.op === 'remove') out.delete(f.toLowerCase());
    else out.add(f.toLowerCase());
  }
  return out;
}

function sameFlags(flags: readonly string[], want: ReadonlySet<string>): boolean {
  return flags.length === want.size && flags.every((f) => want.has(f.toLowerCase()));
}

async function runStore(s: SelectedContext, tag: string, a: StoreArgs, name: string): Promise<void> {
  const view = s.selected;
  const byUid = name.startsWith('UID');
  if (view.readOnly) throw reply.readOnly();
  if (view.outOfRange(a.set, byUid)) throw reply.invalidMessageSet();
  const announce = a.unchangedSince !== null ? enableCondstore(s) : null;
  const msgs = view.resolve(a.set, byUid);
  const changes: FlagChange[] = msgs.map(({ m }) => ({ uid: m.uid, op: a.op, flags: a.flags }));
  const res = await view.folder.store(changes, a.unchangedSince ?? undefined, view.validity);
  const changed = new Set(res.changed.map((m) => m.uid));
  const failed = new Set(res.failed);
  // a keyword this STORE defined is announced before the FETCH that shows it
  const lines: string[] = view.keywordLines(res.snapshot);
  for (const { seq, m: old } of msgs) {
    const m = findUid(res.snapshot.messages, old.uid);
    if (!m) continue;
    const wasChanged = changed.has(m.uid);
    // RFC 9051 §6.4.6: SILENT or not, a change by another session is told, so the flags
    // stay known: those the client was told, changed as it asked, are not what it has.
    // (One UNCHANGEDSINCE kept from the change is named by MODIFIED instead, RFC 7162 §3.2.)
    const showFlags = !a.silent || (!failed.has(m.uid) && !sameFlags(m.flags, storedOn(old.flags, a)));
    // RFC 7162 §3.2: with CONDSTORE on, the MODSEQ of changed messages is reported even when SILENT
    if (showFlags || (wasChanged && s.enabled.condstore)) {
      const parts = [];
      // with QRESYNC, every FETCH names its UID, as the unsolicited ones do (RFC 7162 §3.2.4)
      if (byUid || s.enabled.qresync) parts.push(`UID ${m.uid}`);
      if (showFlags) parts.push(`FLAGS (${view.flags(m)})`);
      if (s.enabled.condstore) parts.push(`MODSEQ (${m.modseq})`);
      lines.push(`* ${seq} FETCH (${parts.join(' ')})`);
    }
    view.told_(m);
  }
  if (announce) lines.push(announce.trimEnd());
  if (changed.size) s.changed(view.name);
  const code = res.failed.length
    ? `MODIFIED ${formatSequence(byUid ? res.failed : res.failed.map((u) => view.seqOf(u)))}`
    : undefined;
  // the FETCH responses, the updates and the tagged reply in one write
  await s.ok(tag, `${name} completed`, { allowExpunge: byUid, code, untagged: lines });
}

// --- COPY / MOVE / EXPUNGE ----------------------------------------------------------

async function expungeDeleted(s: SelectedContext, uids: Set<number> | null): Promise<number[]> {
  const view = s.selected;
  const snap = await view.folder.snapshot();
  const del = snap.messages
    .filter((m) => m.flags.includes('\\Deleted') && (!uids || uids.has(m.uid)))
    .map((m) => m.uid);
  if (!del.length) return [];
  const removed = await view.folder.expunge(del, view.validity);
  if (removed.length) s.changed(view.name);
  return removed;
}

/**
 * RFC 7162 §3.2.7, §3.2.9: "If at least one message got expunged and QRESYNC was enabled,
 * the server MUST send the updated per-mailbox modification sequence" in the tagged OK.
 */
const expungedCode = (s: SelectedContext, removed: number[]): OkOptions => ({
  highestModseq: removed.length > 0 && s.enabled.qresync,
});

/** Moving into Junk trains the spam filter; out of Junk (except to Trash), as ham. One LearnEvent per message. */
async function learnEvents(
  s: AuthedContext,
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
        account: s.user,
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

async function runCopy(s: SelectedContext, tag: string, a: CopyArgs, name: string): Promise<void> {
  const view = s.selected;
  const byUid = name.startsWith('UID');
  const move = name.endsWith('MOVE');
  if (move && view.readOnly) throw reply.readOnly();
  if (view.outOfRange(a.set, byUid)) throw reply.invalidMessageSet();
  const dest = await requireFolder(s, a.dest, true);
  // A message of the set expunged by another session fails the whole command and copies
  // nothing (RFC 9051 §6.4.7, RFC 2180 §4.4.1): NO [EXPUNGEISSUED], as Dovecot answers,
  // after the expunges where the OK would carry them too (UID COPY, MOVE). Those the
  // client was told of already are no longer in the set.
  const expungeIssued = reply.expungeIssued(byUid || move);
  if (view.namesExpunged(a.set, byUid)) throw expungeIssued;
  const msgs = view.resolve(a.set, byUid);
  if (!msgs.length) {
    return s.ok(tag, `${name} completed, nothing to do`, { allowExpunge: byUid });
  }
  // a move leaves the account's usage as it was: a mailbox over its quota can still have
  // mail moved to Trash, which is how a client deletes (as Dovecot, which checks the
  // quota of a move only between quota roots)
  if (!move)
    await quotaCheck(
      s,
      msgs.reduce((x, { m }) => x + Math.max(m.size, 0), 0),
    );
  let res;
  try {
    res = await dest.copyFrom(
      view.folder,
      msgs.map(({ m }) => m),
    );
  } catch (err) {
    // expunged since this session last looked (the folder was read again)
    if (err instanceof MessageGoneError || (err as NodeJS.ErrnoException).code === 'ENOENT')
      throw expungeIssued;
    throw err;
  }
  // each side's ascending runs as ranges, in order, as Dovecot answers: a copy of a whole
  // folder is a few bytes, not a number per message (the i-th UID of one set is still
  // the i-th's copy)
  const code = `COPYUID ${res.validity} ${formatOrderedSequence(res.pairs.map(([x]) => x))} ${formatOrderedSequence(res.pairs.map(([, y]) => y))}`;
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
  const removed = await view.folder.expunge(
    msgs.map(({ m }) => m.uid),
    view.validity,
  );
  s.changed(view.name);
  // its expunges end as EXPUNGE's do, with HIGHESTMODSEQ under QRESYNC (as Dovecot)
  await s.ok(tag, `${name} completed`, { allowExpunge: true, ...expungedCode(s, removed) });
}

/** How long a session's APPEND and COPY go by the quota limit they last read. */
const QUOTA_LIMIT_TTL_MS = 60_000;
const quotaLimits = new WeakMap<AuthedContext, { limit: number; until: number }>();

/**
 * The account's quota limit for APPEND and COPY, read from Redis once a minute per
 * session (Dovecot takes it from the user database at login): a round trip is a turn of
 * the event loop, which a busy worker makes long. GETQUOTA reads it every time.
 */
async function quotaLimit(s: AuthedContext): Promise<number> {
  const hit = quotaLimits.get(s);
  if (hit && hit.until > performance.now()) return hit.limit;
  const limit = await holdOnFailure('Redis', s.deps.quotas.limit(s.user));
  quotaLimits.set(s, { limit, until: performance.now() + QUOTA_LIMIT_TTL_MS });
  return limit;
}

async function quotaCheck(s: AuthedContext, adding: number): Promise<void> {
  const limit = await quotaLimit(s);
  if (!limit) return;
  const { bytes } = await s.mailbox.usage(limit);
  if (bytes + adding > limit) throw reply.overQuota();
}

// --- APPEND -------------------------------------------------------------------------

interface AppendMessage {
  flags: string[];
  date: Date;
  /** A literal, or the parts of a CATENATE (RFC 4469), put together when the command runs. */
  data: Buffer | CatPart[];
}

interface AppendArgs {
  name: string;
  /** One, or several with MULTIAPPEND (RFC 3502 §6: append = "APPEND" SP mailbox 1*append-message). */
  messages: AppendMessage[];
}

function parseAppend(r: ArgReader): AppendArgs {
  const name = r.mailbox();
  const messages: AppendMessage[] = [];
  do {
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
    if (lit.t === 'atom' && lit.v.toUpperCase() === 'CATENATE') {
      messages.push({ flags, date, data: parseCatenate(r) });
      continue;
    }
    if (lit.t !== 'string' || !lit.literal) throw new ParseError('APPEND needs a literal');
    messages.push({ flags, date, data: lit.v });
  } while (r.remaining);
  return { name, messages };
}

/**
 * Before a synchronising literal of APPEND is asked for: a folder that does not exist, or
 * a message the quota has no room for, is refused at once, as Dovecot does, and the client
 * sends none of it. `size` is the literal announced; messages before it (MULTIAPPEND)
 * count too. The literal may be the folder's name: then there is nothing to check yet.
 */
async function appendBeforeLiteral(s: AuthedContext, r: ArgReader, size: number): Promise<void> {
  if (!r.remaining) return;
  await requireFolder(s, r.mailbox(), true);
  let adding = size;
  while (r.remaining) {
    const t = r.next();
    if (t.t === 'string' && t.literal) adding += t.v.length;
  }
  await quotaCheck(s, adding);
}

/**
 * APPEND, and MULTIAPPEND (RFC 3502): all the messages or none (§3), their UIDs in one
 * APPENDUID (RFC 4315 §3); a message of no bytes is refused, as Dovecot does. The framer already bounds the literal bytes of one command by
 * the message size limit.
 */
async function runAppend(s: AuthedContext, tag: string, a: AppendArgs): Promise<void> {
  const limit = s.deps.config.message_size_limit;
  const literals = a.messages.filter((m): m is AppendMessage & { data: Buffer } => Buffer.isBuffer(m.data));
  if (literals.some((m) => m.data.length > limit)) throw reply.tooBig();
  const f = await requireFolder(s, a.name, true);
  // CATENATE parts are read only once the destination is known to exist; the bytes of
  // the whole command, literals and parts, stay within the message size limit
  const catenated = a.messages.filter((m) => !Buffer.isBuffer(m.data));
  const built = await assemble(
    s,
    catenated.map((m) => m.data as CatPart[]),
    limit,
  );
  const messages = a.messages.map((m) => ({ ...m, data: Buffer.isBuffer(m.data) ? m.data : built.shift()! }));
  // one empty message fails the whole MULTIAPPEND, as any other refusal (RFC 3502 §3)
  if (messages.some((m) => !m.data.length)) throw reply.emptyMessage();
  await quotaCheck(
    s,
    messages.reduce((sum, m) => sum + m.data.length, 0),
  );
  const r = await f.appendMany(messages).catch((err: unknown) => {
    throw err instanceof InternalDateError ? reply.internalDateRange() : err;
  });
  s.changed(a.name);
  await s.ok(tag, 'APPEND completed', { code: `APPENDUID ${r.validity} ${formatSequence(r.uids)}` });
}

// --- the group ----------------------------------------------------------------------

/** COPY and MOVE (RFC 6851), by sequence number or UID. */
const copy = command({
  states: SELECTED,
  parse: (r): CopyArgs => {
    const set = r.seqSet();
    const dest = r.mailbox();
    r.end();
    return { set, dest };
  },
  run: runCopy,
});

export const messageCommands: CommandGroup = {
  APPEND: command({
    states: AUTHED,
    parse: parseAppend,
    beforeLiteral: appendBeforeLiteral,
    run: runAppend,
  }),
  CHECK: command({
    states: SELECTED,
    parse: none,
    run: (s, tag) => s.ok(tag, 'CHECK completed'),
  }),
  CLOSE: command({
    states: SELECTED,
    parse: none,
    async run(s, tag) {
      // RFC 9051 §6.4.1: silently expunge \Deleted, no EXPUNGE responses
      if (!s.selected.readOnly) await expungeDeleted(s, null);
      s.unselect();
      await s.ok(tag, 'CLOSE completed');
    },
  }),
  UNSELECT: command({
    states: SELECTED,
    parse: none,
    async run(s, tag) {
      s.unselect();
      await s.ok(tag, 'UNSELECT completed');
    },
  }),
  EXPUNGE: command({
    states: SELECTED,
    parse: none,
    async run(s, tag) {
      if (s.selected.readOnly) throw reply.readOnly();
      const removed = await expungeDeleted(s, null);
      await s.ok(tag, 'EXPUNGE completed', expungedCode(s, removed));
    },
  }),
  'UID EXPUNGE': command({
    states: SELECTED,
    parse: (r) => {
      const set = r.seqSet();
      r.end();
      return set;
    },
    async run(s, tag, set) {
      if (s.selected.readOnly) throw reply.readOnly();
      const uids = new Set(s.selected.resolve(set, true).map(({ m }) => m.uid));
      const removed = await expungeDeleted(s, uids);
      await s.ok(tag, 'UID EXPUNGE completed', expungedCode(s, removed));
    },
  }),
  ...withUid('FETCH', command({ states: SELECTED, parse: parseFetch, run: runFetch })),
  ...withUid('STORE', command({ states: SELECTED, parse: parseStore, run: runStore })),
  ...withUid('COPY', copy),
  ...withUid('MOVE', copy),
};
