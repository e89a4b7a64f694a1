import { randomBytes } from 'node:crypto';
import * as fsc from 'node:fs';
import { constants, promises as fs } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as setTimeoutP } from 'node:timers/promises';
import { promisify } from 'node:util';
import { DotLock, identOf } from './lock.js';
import { recordUsage } from './maildirsize.js';
import {
  appendedUidList,
  formatKeywords,
  formatUidEntries,
  formatUidList,
  parseKeywords,
  parseUidList,
  type UidList,
} from './uidlist.js';

/** One message as a folder snapshot sees it. */
export interface MessageInfo {
  uid: number;
  /** Maildir unique name, without the `:2,` info. */
  base: string;
  /** Path relative to the folder: `new/<base>` or `cur/<base>:2,<letters>`. */
  rel: string;
  /** IMAP flags (`\Seen`, keywords). */
  flags: string[];
  /** Size in bytes (from `,S=` when present). */
  size: number;
  modseq: number;
}

export interface FolderSnapshot {
  validity: number;
  uidNext: number;
  highestModseq: number;
  /** Every keyword the folder has defined (`dovecot-keywords`), in use or not. */
  keywords: string[];
  /** In UID order. */
  messages: MessageInfo[];
}

/** The header block of a message file, read without its body. */
export interface HeaderBlock {
  /** Header lines up to the empty line (excluded), one char per byte. */
  text: string;
  /**
   * The message's size with every line end CRLF, as IMAP and POP3 send it (RFC822.SIZE,
   * POP3's LIST): Dovecot's `,W=` when the name carries it; else counted in the file,
   * whole when the first read did not hold all of it, unless the name carries `,S=` and no
   * line read ends in a bare LF (Mailyard's delivery writes every line end as CRLF, and
   * Dovecot names a file with LF line ends with `,W=`): then `,S=`.
   */
  sentSize: number;
  /** The file was read whole to count its line ends. */
  counted: boolean;
  /** Modification time (INTERNALDATE, whole ms). */
  mtimeMs: number;
  /** The header block was longer than the most that is read (about 2 MiB): `text` is its start. */
  cut: boolean;
}

export interface FlagChange {
  uid: number;
  op: 'add' | 'remove' | 'set';
  flags: string[];
}

// Maildir info letters (https://cr.yp.to/proto/maildir.html) <-> IMAP system flags.
const LETTER_TO_FLAG: Record<string, string> = {
  D: '\\Draft',
  F: '\\Flagged',
  R: '\\Answered',
  S: '\\Seen',
  T: '\\Deleted',
};
const FLAG_TO_LETTER = Object.fromEntries(
  Object.entries(LETTER_TO_FLAG).map(([l, f]) => [f.toLowerCase(), l]),
);

export const UIDLIST = 'dovecot-uidlist';
const KEYWORDS = 'dovecot-keywords';
/** Our own per-folder state: MODSEQ and flag letters per message. */
const MODSEQ = 'mailyard-modseq';
/**
 * The expunge history for QRESYNC: a line `<uid> <modseq>` per expunged message, oldest
 * first, appended under the folder lock. A line `- <modseq>` says the history was cut
 * there: expunges up to that MODSEQ are no longer listed. Apart from the state, which
 * every process serving the folder reads after every change: the history is only read
 * when a client resynchronises.
 */
const EXPUNGES = 'mailyard-expunged';
/**
 * Past this size the history is cut back to its last EXPUNGED_KEPT entries, or as many as
 * fit in half of it (so that the next append does not cut it again).
 */
export const EXPUNGES_TRIM_BYTES = 64 * 1024;
/**
 * The lowest UID no session has claimed as \Recent yet (Dovecot's first_recent_uid), under
 * its own dot-lock: claims come after every delivery, from every session of the folder,
 * and are no change to the messages, so they neither wait for nor invalidate the state.
 */
const RECENT = 'mailyard-recent';
/** In the account's root: the last UIDVALIDITY issued to one of its folders. */
const VALIDITY = 'mailyard-uidvalidity';
/**
 * How many expunged UIDs the history keeps with their MODSEQ (for QRESYNC) once it is cut;
 * a client that resynchronises from further back is told every UID that is no longer
 * there (SelectedMailbox.vanishedEarlier), as Dovecot does once its log rotated.
 */
export const EXPUNGED_KEPT = 2_000;
/** Most calls run under one hold of the folder lock. */
const LOCK_BATCH = 64;
/**
 * Most numbered messages moved from new/ to cur/ under one hold (a rename each, blocking):
 * a folder of thousands of deliveries is moved over several changes.
 */
export const MOVE_BATCH = 256;
/** What a cached snapshot is validated by. */
const SIGNATURE_FILES = ['new', 'cur', UIDLIST, MODSEQ, KEYWORDS];
/** How long a sub-second mtime is distrusted: well above the kernel's clock tick (1-10 ms). */
const FINE_MTIME_MS = 50;
/**
 * Longest time a busy folder goes without reading cur/ whole (see MailFolder.files): what
 * bounds how long a change made behind the lock's back in the same clock tick as one of
 * ours can stay unseen.
 */
const FULL_SCAN_MS = 1000;
/** How long a snapshot waits for another process's hold of the lock before reading cur/ itself. */
const HOLDER_WAIT_MS = 100;

interface ModseqState {
  /**
   * How many times the state was written, first in the file: with its identity (see
   * readStateFile), what tells a reader that nothing changed without reading the file.
   * Every writer of the UID list or keywords writes the state too.
   */
  w?: number;
  highest: number;
  /** uid -> [modseq, info letters last seen]. */
  msgs: Record<string, [number, string]>;
  /**
   * [uid, modseq at which it was expunged], oldest first: where state written before the
   * history had its own file (EXPUNGES) kept it. Written empty, moved to the file at the
   * first change.
   */
  expunged?: [number, number][];
  /** Where an older version kept the first recent UID (now RECENT); the higher one counts. */
  recent?: number;
  /**
   * `ino:mtimeNs:size` of cur/ when the writer wrote this state, if every name in cur/ was
   * `<base>:2,<letters>` as `msgs` and the UID list say; with `inNew`, the bases then in
   * new/. While cur/ keeps that stat, the folder's files follow from this state and a
   * listing of new/ alone (MailFolder.files). Absent: read cur/.
   */
  cur?: string;
  inNew?: string[];
  /** The UID list's next UID when this was written: a list read between the two writes is not paired with it. */
  next?: number;
}

interface Scanned {
  rel: string;
  letters: string;
}

function splitName(name: string): { base: string; letters: string } {
  const i = name.indexOf(':2,');
  if (i < 0) return { base: name.includes(':') ? name.slice(0, name.indexOf(':')) : name, letters: '' };
  return { base: name.slice(0, i), letters: name.slice(i + 3) };
}

function sizeOf(base: string): number | null {
  const m = /,S=(\d+)/.exec(base);
  return m ? Number(m[1]) : null;
}

async function readText(path: string): Promise<string | null> {
  try {
    return await fs.readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

function openSyncOrNull(path: string, flags: string | number = 'r'): number | null {
  try {
    return fsc.openSync(path, flags);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** A state file's text with the identity of exactly what was read; null when it is not there. */
function readIdentified(path: string): { text: string; ident: string } | null {
  const fd = openSyncOrNull(path);
  if (fd === null) return null;
  try {
    const ident = identOf(fsc.fstatSync(fd, { bigint: true }));
    return { text: fsc.readFileSync(fd, 'utf8'), ident };
  } finally {
    fsc.closeSync(fd);
  }
}

function identOfPath(path: string): string | null {
  const st = fsc.statSync(path, { bigint: true, throwIfNoEntry: false });
  return st ? identOf(st) : null;
}

const HEAD = Buffer.alloc(64);
/** The write count of the state file's first line (ModseqState.w), from its first bytes. */
function headCount(fd: number): number | undefined {
  const n = fsc.readSync(fd, HEAD, 0, HEAD.length, 0);
  const m = /^\{"w":(\d+)[,}]/.exec(HEAD.toString('latin1', 0, n));
  return m ? Number(m[1]) : undefined;
}

const parseRecentMark = (text: string): number => Number(text.trim()) || 1;

/**
 * A small state file (the keywords, the \Recent mark) as read and parsed
 * last time when it has the same identity, else read again.
 */
function readParsed<T>(
  path: string,
  prev: { text: string; ident: string | null; value: T } | null,
  parse: (text: string, prev: { text: string; value: T } | null) => T,
): { text: string; ident: string | null; value: T } | null {
  // a file that is not there (a folder without keywords) costs this stat only: an open
  // that fails throws, and an exception costs more than a read
  const ident = identOfPath(path);
  if (ident === null) return null;
  if (prev?.ident && ident === prev.ident) return prev;
  return reparse(prev, readIdentified(path), parse);
}

/**
 * What a file that grew holds past `offset` (through `size` at most), read on the open file
 * from `before` it, which must be what the file held just before `offset` when it was read
 * last (at least the newline that ended it); null when it is not (the file was rewritten
 * in place: it is read whole).
 */
function readOn(fd: number, offset: number, size: number, before = '\n'): string | null {
  const expect = Buffer.from(before);
  const buf = Buffer.allocUnsafe(size - offset + expect.length);
  let n = 0;
  while (n < buf.length) {
    const r = fsc.readSync(fd, buf, n, buf.length - n, offset - expect.length + n);
    if (r === 0) break;
    n += r;
  }
  return n >= expect.length && buf.subarray(0, expect.length).equals(expect)
    ? buf.toString('utf8', expect.length, n)
    : null;
}

/** Whether the open file begins with `head`. */
function beginsWith(fd: number, head: string): boolean {
  const expect = Buffer.from(head);
  const buf = Buffer.allocUnsafe(expect.length);
  return fsc.readSync(fd, buf, 0, buf.length, 0) === buf.length && buf.equals(expect);
}

type ParsedList = { text: string; ident: string | null; value: UidList | null };

/**
 * The UID list as read last while the file is still that one, else read again (`always`:
 * whatever its identity). A list that grew on the same inode by whole lines (records
 * appended under the lock, by us or by Dovecot) is read on from where the last read ended,
 * and only the lines added are parsed.
 *
 * Its identity does not tell alone that it is the same file: a folder deleted and created
 * again under its name may get its list on the inode the old list had, grown or not, and
 * so may a list written whole on one just freed. Its first line must also be as read: it
 * holds the UIDVALIDITY and the GUID, new with every folder, and the next UID as of the
 * last whole write (an append leaves it as it is). Then the file is read on only when the
 * line read last is still just before where the reading stopped. Two short reads, never
 * the whole list: a busy folder's list is read after every change.
 */
function readList(path: string, prev: ParsedList | null, always: boolean): ParsedList | null {
  if (!prev?.value || !prev.text.endsWith('\n')) return reparse(prev, readIdentified(path), parseUidList);
  const { text, value } = prev;
  const fd = openSyncOrNull(path);
  if (fd === null) return null;
  try {
    const st = fsc.fstatSync(fd, { bigint: true });
    const ident = identOf(st);
    if (beginsWith(fd, text.slice(0, text.indexOf('\n') + 1))) {
      if (!always && ident === prev.ident) return prev;
      const [ino, size] = prev.ident?.split(':') ?? [];
      const from = Number(size);
      const to = Number(st.size);
      if (String(st.ino) === ino && to > from) {
        const last = text.slice(text.lastIndexOf('\n', text.length - 2) + 1);
        const tail = readOn(fd, from, to, last);
        // whole lines, all of what the identity says (a line being written is read whole later)
        if (tail?.endsWith('\n') && Buffer.byteLength(tail) === to - from)
          return { text: text + tail, ident, value: appendedUidList(value, tail) };
      }
    }
    return reparse(prev, { text: fsc.readFileSync(fd, 'utf8'), ident }, parseUidList);
  } finally {
    fsc.closeSync(fd);
  }
}

/**
 * Appends `lines` to the UID list when it is still the file `read` describes (checked on
 * the open file) and ends with a whole line; returns its identity after and its sync under
 * way, or null when it cannot (then the list is written whole). Dovecot appends its
 * records so.
 */
function appendUidList(
  path: string,
  read: ParsedList | null,
  lines: string,
): { ident: string; synced: Promise<void> } | null {
  if (!read?.ident || !read.text.endsWith('\n')) return null;
  const fd = openSyncOrNull(path, constants.O_WRONLY | constants.O_APPEND);
  if (fd === null) return null;
  let ident: string;
  try {
    if (identOf(fsc.fstatSync(fd, { bigint: true })) !== read.ident) {
      fsc.closeSync(fd);
      return null;
    }
    fsc.writeSync(fd, lines);
    // a sync changes neither size nor mtime: the identity after it is this one
    ident = identOf(fsc.fstatSync(fd, { bigint: true }));
  } catch (err) {
    fsc.closeSync(fd);
    throw err;
  }
  return { ident, synced: fdatasyncP(fd).finally(() => fsc.closeSync(fd)) };
}

/**
 * One change of the MODSEQ state, a line appended to its file: the fields that are set
 * whole, the messages whose entry changed and the UIDs whose entry went. `w` is the state's
 * write count after it, one above the line before.
 */
interface StateChange {
  w: number;
  highest: number;
  msgs: Record<string, [number, string]>;
  gone: number[];
  cur: string | null;
  inNew: string[] | null;
  next: number | null;
}

/**
 * The MODSEQ state file as read (MODSEQ): a first line with the whole state, then a line
 * per change (StateChange), appended under the folder lock so that a change costs what it
 * changed and a reader reads only the lines added since it last looked, as Dovecot's
 * `dovecot.index.log` beside its index. The lock holder writes the whole state again, by a
 * rename, once the changes outgrow it (STATE_CHANGES_MIN).
 */
interface StateRead {
  /** identOf the file as read; null when its last line was still being written (read on). */
  ident: string | null;
  /** Its inode (from ident): a file renamed over it is read from the start. */
  ino: string;
  /** Bytes read, through the last whole line. */
  offset: number;
  /** The write count of the first line (headCount) and that line's length. */
  baseW: number | undefined;
  baseLen: number;
  /** Whether the file as read ended with a whole line, so that a change can follow it. */
  appendable: boolean;
  value: ModseqState | null;
}

/** Appended changes are let grow to the size of the whole state, and at least to this. */
const STATE_CHANGES_MIN = 16 * 1024;

const inoOf = (ident: string) => ident.slice(0, ident.indexOf(':'));

/**
 * Applies whole change lines of `text` (what follows `offset` in the file) to a copy of
 * `prev`; null when one does not parse or does not follow the one before (the file was
 * rewritten in place: read it whole).
 */
function readChanges(
  prev: StateRead & { value: ModseqState },
  text: string,
  ident: string,
): StateRead | null {
  const end = text.lastIndexOf('\n') + 1;
  if (end === 0) {
    // a line being written: ours begin with the next write count
    const next = `{"w":${(prev.value.w ?? 0) + 1},`;
    return next.startsWith(text) || text.startsWith(next) ? { ...prev, ident: null } : null;
  }
  const s: ModseqState = { ...prev.value, msgs: { ...prev.value.msgs } };
  for (const line of text.slice(0, end - 1).split('\n')) {
    let c: StateChange;
    try {
      c = JSON.parse(line) as StateChange;
    } catch {
      return null;
    }
    if (
      typeof c?.w !== 'number' ||
      c.w !== (s.w ?? 0) + 1 ||
      typeof c.msgs !== 'object' ||
      !Array.isArray(c.gone)
    )
      return null;
    s.w = c.w;
    s.highest = c.highest;
    for (const uid of c.gone) delete s.msgs[uid];
    Object.assign(s.msgs, c.msgs);
    s.cur = c.cur ?? undefined;
    s.inNew = c.inNew ?? undefined;
    s.next = c.next ?? undefined;
  }
  return {
    ...prev,
    ident: end === text.length ? ident : null,
    offset: prev.offset + Buffer.byteLength(text.slice(0, end)),
    appendable: end === text.length,
    value: s,
  };
}

/** The whole state file: its first line, then the changes after it. A first line that does not parse is no state. */
export function parseStateFile(text: string, ident: string): StateRead {
  const nl = text.indexOf('\n');
  const first = nl < 0 ? text : text.slice(0, nl);
  let value: ModseqState | null = null;
  try {
    value = JSON.parse(first) as ModseqState;
  } catch {
    // damaged: rebuilt from the files by the next lock holder
  }
  const baseLen = nl < 0 ? Buffer.byteLength(text) : Buffer.byteLength(first) + 1;
  // an older version's file is one line without a newline: read, never appended to
  const read: StateRead = {
    ident,
    ino: inoOf(ident),
    offset: baseLen,
    baseW: value?.w,
    baseLen,
    appendable: nl >= 0,
    value,
  };
  if (!value || nl < 0 || nl === text.length - 1) return read;
  return readChanges({ ...read, value }, text.slice(nl + 1), ident) ?? { ...read, value: null };
}

/**
 * The MODSEQ state file, read on from `prev` when lines were appended since, else whole.
 * Blocking reads, as every read of the state files (see readState).
 */
function readStateFile(path: string, prev: StateRead | null): StateRead | null {
  const fd = openSyncOrNull(path);
  if (fd === null) return null;
  try {
    const st = fsc.fstatSync(fd, { bigint: true });
    const ident = identOf(st);
    // the count covers a file replaced within one clock tick by one of the same size on a
    // reused inode
    if (prev?.value && prev.ident === ident && prev.baseW !== undefined && headCount(fd) === prev.baseW)
      return prev;
    const size = Number(st.size);
    if (prev?.value && prev.appendable && prev.ino === String(st.ino) && size > prev.offset) {
      const text = readOn(fd, prev.offset, size);
      const read = text !== null ? readChanges({ ...prev, value: prev.value }, text, ident) : null;
      if (read) return read;
    }
    return parseStateFile(fsc.readFileSync(fd, 'utf8'), ident);
  } finally {
    fsc.closeSync(fd);
  }
}

/**
 * Appends `line` to the state file when it is still the one `read` describes; returns the
 * identity of the file after it, or null when the file changed (then it is written whole).
 */
function appendState(path: string, read: StateRead, line: string): string | null {
  // not created when missing: then it is written whole
  const fd = openSyncOrNull(path, constants.O_WRONLY | constants.O_APPEND);
  if (fd === null) return null;
  try {
    if (identOf(fsc.fstatSync(fd, { bigint: true })) !== read.ident) return null;
    fsc.writeSync(fd, line);
    return identOf(fsc.fstatSync(fd, { bigint: true }));
  } finally {
    fsc.closeSync(fd);
  }
}

/**
 * Replaces `path` by a rename (not synced); returns the identity of the file written
 * (identOf). Synchronous, as everything under the folder lock but its fsync (see DotLock).
 */
function writeAtomic(path: string, content: string): string {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = fsc.openSync(tmp, 'w', 0o600);
  let ident: string;
  try {
    fsc.writeFileSync(fd, content);
    ident = identOf(fsc.fstatSync(fd, { bigint: true }));
  } finally {
    fsc.closeSync(fd);
  }
  fsc.renameSync(tmp, path);
  return ident;
}

let counter = 0;
/** A new Maildir unique name: `<sec>.M<usec>P<pid>Q<n>R<rand>.<host>,S=<size>`. */
export function uniqueName(size: number, host = osHostname(), date = new Date()): string {
  return `${uniqueStem(host, date)},S=${size}`;
}

/** A new Maildir unique name without its size fields. */
function uniqueStem(host: string, date = new Date()): string {
  const sec = Math.floor(date.getTime() / 1000);
  const usec = Math.floor((performance.now() * 1000) % 1_000_000);
  const h = host.replace(/[/:]/g, '_');
  return `${sec}.M${usec}P${process.pid}Q${++counter}R${randomBytes(4).toString('hex')}.${h}`;
}

/** LFs not after a CR in `data`; `before` is the byte before `data[0]` (-1: none). */
function bareLfs(data: Buffer, before = -1): number {
  let n = 0;
  for (let at = data.indexOf(10); at >= 0; at = data.indexOf(10, at + 1))
    if ((at ? data[at - 1] : before) !== 13) n++;
  return n;
}

/**
 * A message's size with every bare LF counted as CRLF: what POP3's RETR and IMAP's FETCH
 * send of it (RFC 1939 §11, RFC 5322 §2.1), Dovecot's `,W=`.
 */
export function crlfSize(data: Buffer): number {
  return data.length + bareLfs(data);
}

/**
 * The message with every bare LF made CRLF, as POP3 and IMAP send it (a bare CR stays, as
 * Dovecot leaves it); the same buffer when it has none.
 */
export function withCrlf(data: Buffer): Buffer {
  const extra = bareLfs(data);
  if (!extra) return data;
  const out = Buffer.allocUnsafe(data.length + extra);
  let o = 0;
  let from = 0;
  for (let at = data.indexOf(10); at >= 0; at = data.indexOf(10, at + 1)) {
    if (at && data[at - 1] === 13) continue;
    o += data.copy(out, o, from, at);
    out[o++] = 13;
    from = at;
  }
  data.copy(out, o, from);
  return out;
}

/** Dovecot's `,W=` of a Maildir name: the message's size with CRLF line ends; null without. */
export function namedCrlfSize(base: string): number | null {
  const m = /,W=(\d+)/.exec(base);
  return m ? Number(m[1]) : null;
}

/**
 * The size fields of a Maildir name as they stand in it: `,S=` (the file's size) and
 * Dovecot's `,W=` (its size with CRLF line ends, what POP3's LIST and STAT must say of a
 * file with LF line ends). A copy of the file carries them unchanged: its content is
 * the same, and without `,W=` the copy would be listed with its size on disk. A name
 * without them gives its copy none either: the copy's size is found as the original's.
 */
function sizeFields(base: string): string {
  return base.match(/,[SW]=\d+/g)?.join('') ?? '';
}

/** A message written into tmp/ for APPEND or COPY, and whether it was moved into cur/ since. */
interface Staged {
  tmp: string;
  base: string;
  flags: string[];
  size: number;
  moved?: boolean;
}

/**
 * One Maildir++ folder with Dovecot-compatible UIDs. Every change to the UID list,
 * flags or MODSEQ state happens under the `dovecot-uidlist.lock` dot-lock, so
 * deliveries, sessions of every instance, and a Dovecot on the same files agree.
 * Snapshots are cached per process and revalidated by directory timestamps.
 */
export class MailFolder {
  /** The last snapshot read under a trusted signature, good until `until` (ms). */
  private cache: { sig: string; snap: FolderSnapshot; until: number } | null = null;
  /** Calls waiting for the folder lock in this process, and whether a batch is running. */
  private waiting: {
    fn: (ctx: LockedFolder) => Promise<unknown>;
    resolve: (v: unknown) => void;
    reject: (err: unknown) => void;
  }[] = [];
  private locking = false;
  /** Changes made under the lock by this process; a snapshot read is shared only within one. */
  private generation = 0;
  private reading: { generation: number; snap: Promise<FolderSnapshot> } | null = null;
  /** The last snapshot read outside the lock, with the keywords it was built under. */
  private last: { snap: FolderSnapshot; keywords: string } | null = null;
  /** The state files as last read or written, their identity (identOf; null: not known), and what they parsed to. */
  private readonly parsed: {
    list: { text: string; ident: string | null; value: UidList | null } | null;
    state: StateRead | null;
    keywords: { text: string; ident: string | null; value: string[] } | null;
    recent: { text: string; ident: string | null; value: number } | null;
  } = { list: null, state: null, keywords: null, recent: null };
  private readonly dates = new Map<string, Date>();
  /** Settles when this process releases the folder lock it holds now (null: not held). */
  private lockHeld: Promise<void> | null = null;
  /** When cur/ was last read whole, and whether the next read must read it whole. */
  private lastFullScan = 0;
  private forceScan = false;
  /** The last file map, whose entries a derived one reuses. */
  private lastFiles: Map<string, Scanned> | null = null;
  /**
   * The state this process last wrote under the lock, or last read and found cur/ and new/
   * as it says (the parsed values, compared by identity after readState), the files it
   * describes and the snapshot they make: while nobody wrote since, that snapshot is the
   * folder's (see ownSnapshot). A busy folder's sessions ask after every command: a change
   * made by another process is then read and built once, not at every command.
   */
  private own: {
    list: UidList | null;
    state: ModseqState | null;
    keywords: string[] | null;
    files: Map<string, Scanned>;
    snap: FolderSnapshot;
  } | null = null;

  constructor(
    readonly dir: string,
    readonly name: string,
    private readonly host: string = osHostname(),
    /** The account's root, where its quota file is kept (Maildir++ `maildirsize`). */
    private readonly quotaDir?: string,
  ) {}

  private recordUsage(bytes: number, messages: number): void {
    if (this.quotaDir) recordUsage(this.quotaDir, bytes, messages);
  }

  /**
   * Whether the folder is there. Only "no such file" means no: any other error (EIO,
   * ELOOP, EACCES) is the store failing and is thrown, so a caller never creates,
   * refuses or reports a folder as missing because the disk did not answer.
   */
  async exists(): Promise<boolean> {
    try {
      // a stat of a cached directory: no turn of the event loop (see DotLock)
      fsc.accessSync(join(this.dir, 'cur'));
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // a name longer than the file system holds cannot exist either
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ENAMETOOLONG') return false;
      throw err;
    }
  }

  async ensure(): Promise<void> {
    await Promise.all(
      ['tmp', 'new', 'cur'].map((d) => fs.mkdir(join(this.dir, d), { recursive: true, mode: 0o700 })),
    );
    if (this.name !== 'INBOX') await fs.writeFile(join(this.dir, 'maildirfolder'), '', { flag: 'a' });
  }

  private signature(): string | null {
    const now = Date.now();
    // this runs after every IMAP command: five blocking stat() of the folder's own
    // entries (always in the dentry cache, as Dovecot stats them) answer in
    // microseconds, where a round trip through the thread pool costs two wake-ups
    const stats = SIGNATURE_FILES.map((p) => {
      try {
        return fsc.statSync(join(this.dir, p), { bigint: true, throwIfNoEntry: false });
      } catch {
        return undefined;
      }
    });
    const parts: string[] = [];
    for (const st of stats) {
      if (!st) {
        parts.push('-');
        continue;
      }
      // a change within the same clock tick leaves mtime unchanged: distrust recent
      // ones. A file system that keeps sub-second times ticks with the kernel's coarse
      // clock (a few ms); one that keeps whole seconds (or an mtime that happens to
      // fall on a whole second) gets two seconds, as before.
      const fine = st.mtimeNs % 1_000_000_000n !== 0n;
      if (now - Number(st.mtimeMs) < (fine ? FINE_MTIME_MS : 2000)) return null;
      parts.push(`${st.ino}:${st.mtimeNs}:${st.size}`);
    }
    return parts.join('|');
  }

  private async listDir(sub: 'new' | 'cur'): Promise<string[]> {
    try {
      return await fs.readdir(join(this.dir, sub));
    } catch (err) {
      throw this.goneOr(err);
    }
  }

  /**
   * new/, listed at every snapshot of a busy folder and under the lock: synchronously, as
   * a directory that mail only passes through is small (a fourth of the CPU of the
   * asynchronous call, and no turn of the event loop while the lock is held).
   */
  private listNew(): string[] {
    try {
      return fsc.readdirSync(join(this.dir, 'new'));
    } catch (err) {
      throw this.goneOr(err);
    }
  }

  private goneOr(err: unknown): unknown {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? new FolderGoneError(this.name) : err;
  }

  /**
   * Reads new/ and cur/. `regular` tells whether every name in cur/ is `<base>:2,<letters>`
   * and no base is in both: then the names follow from the UID list and flag letters.
   * `cur` is cur/'s stat (curStat) as the read began and ended.
   */
  private async scan(): Promise<{
    files: Map<string, Scanned>;
    regular: boolean;
    cur: { before: string | null; after: string | null };
  }> {
    this.lastFullScan = Date.now();
    this.forceScan = false;
    const before = this.curStat();
    const out = new Map<string, Scanned>();
    let regular = true;
    for (const sub of ['new', 'cur'] as const) {
      for (const n of await this.listDir(sub)) {
        if (n.startsWith('.')) continue;
        const { base, letters } = splitName(n);
        if (sub === 'cur' && !n.includes(':2,')) regular = false;
        // the same base in new/ and cur/ (a rename raced a scan): cur wins
        if (out.has(base)) {
          regular = false;
          if (sub === 'new') continue;
        }
        out.set(base, { rel: `${sub}/${n}`, letters: sub === 'new' ? '' : letters });
      }
    }
    this.lastFiles = out;
    return { files: out, regular, cur: { before, after: this.curStat() } };
  }

  /** `ino:mtimeNs:size` of cur/, or null when it cannot be stat'ed. */
  private curStat(): string | null {
    try {
      const st = fsc.statSync(join(this.dir, 'cur'), { bigint: true, throwIfNoEntry: false });
      return st ? `${st.ino}:${st.mtimeNs}:${st.size}` : null;
    } catch {
      return null;
    }
  }

  /**
   * The folder's files, reading cur/ only when it must. Every change Mailyard makes to cur/
   * (APPEND, COPY, STORE, EXPUNGE) is made under the folder lock, and the lock holder writes
   * into the MODSEQ state each message's flag letters and the stat of cur/ after its changes
   * (ModseqState.cur). While cur/ still has that stat, its names are `<base>:2,<letters>` of
   * the state: one stat and a listing of new/ (where deliveries arrive, without the lock)
   * replace reading a directory of every message after every change of a busy folder.
   *
   * Anything else changing cur/ (Dovecot on the same files, a user's tools) changes its
   * mtime, and is read: except within the clock tick of a lock holder's stat, which the
   * distrust of recent mtimes cannot cover here (a busy folder's cur/ always changed
   * recently). Hence cur/ is still read whole at least every FULL_SCAN_MS, and after a
   * file was not where the snapshot said (forceScan); a snapshot made without reading it
   * is cached for no longer than that (see readSnapshot).
   */
  private async files(
    list: UidList | null,
    state: ModseqState | null,
    /**
     * For a lock holder, which changes the map returned: whether `list` and `state` are
     * copies of what this process last wrote (isOwn).
     */
    hold?: { mine: boolean },
  ): Promise<{
    files: Map<string, Scanned>;
    regular: boolean;
    derived?: boolean;
    own?: FolderSnapshot;
    /** When cur/ was read whole: its stat as the read began and ended (scan). */
    cur?: { before: string | null; after: string | null };
  }> {
    if (list && state && this.curTrusted(list, state)) {
      const newNames = this.listNew();
      const own = (hold ? hold.mine : this.isOwn(list, state)) ? this.own! : null;
      if (own && sameBases(newNames, state.inNew!)) {
        // the snapshot's files are never changed: a lock holder changes a copy
        this.lastFiles = hold ? new Map(own.files) : own.files;
        return { files: this.lastFiles, regular: true, derived: true, own: own.snap };
      }
      const derived = this.derive(list, state, state.inNew!, newNames);
      if (derived) {
        this.lastFiles = derived;
        return { files: derived, regular: true, derived: true };
      }
    }
    return this.scan();
  }

  /** Whether cur/ is as the writer of `state` left it (see files()). */
  private curTrusted(list: UidList, state: ModseqState): boolean {
    return (
      !!state.cur &&
      !!state.inNew &&
      state.next === list.next &&
      !this.forceScan &&
      Date.now() - this.lastFullScan < FULL_SCAN_MS &&
      this.curStat() === state.cur
    );
  }

  /** Whether the state just read is what this process last wrote (parsed values are kept while the text is the same). */
  private isOwn(list: UidList, state: ModseqState): boolean {
    const own = this.own;
    return (
      !!own &&
      own.list === list &&
      own.state === state &&
      own.keywords === (this.parsed.keywords?.value ?? null)
    );
  }

  /**
   * The snapshot this process made at its last change, when nobody changed the folder
   * since: a busy folder's sessions ask after every command, and most changes they see
   * are their own process's.
   */
  private async ownSnapshot(list: UidList | null, state: ModseqState | null): Promise<FolderSnapshot | null> {
    const own = this.own;
    if (!own || !list || !state || !this.isOwn(list, state) || !this.curTrusted(list, state)) return null;
    // a change while new/ is listed makes this snapshot older, never wrong
    return sameBases(this.listNew(), state.inNew!) ? own.snap : null;
  }

  /** Files from the state and a listing of new/; null when they disagree (then cur/ is read). */
  private derive(
    list: UidList,
    state: ModseqState,
    inNew: string[],
    newNames: string[],
  ): Map<string, Scanned> | null {
    const fresh = new Map<string, string>();
    for (const n of newNames) if (!n.startsWith('.')) fresh.set(splitName(n).base, n);
    // a message that was in new/ and is no longer there went elsewhere: read cur/
    for (const base of inNew) if (!fresh.has(base)) return null;
    const wasNew = new Set(inNew);
    const prev = this.lastFiles;
    const out = new Map<string, Scanned>();
    for (const [base, uid] of list.entries) {
      const st = state.msgs[uid];
      if (!st) return null;
      const letters = st[1];
      const n = fresh.get(base);
      if (n !== undefined) {
        // in new/ now, yet in cur/ when the state was written: read both
        if (letters || !wasNew.has(base)) return null;
        fresh.delete(base);
        out.set(base, { rel: `new/${n}`, letters: '' });
        continue;
      }
      const p = prev?.get(base);
      out.set(
        base,
        p && p.letters === letters && p.rel.startsWith('cur/')
          ? p
          : { rel: `cur/${base}:2,${letters}`, letters },
      );
    }
    // delivered since: in new/, not yet numbered
    for (const [base, n] of fresh) out.set(base, { rel: `new/${n}`, letters: '' });
    return out;
  }

  /**
   * The UID list, MODSEQ state and keywords as on disk. The files are small, written
   * often and read after every change by every session of the folder: they are read
   * with blocking calls (always in the page cache, as signature() stats them), and a
   * file whose text is the same as last time is not parsed again. The objects returned
   * are this process's copies: `writable` ones may be changed by the caller, and `mine`
   * tells whether they are copies of what this process last wrote (isOwn).
   */
  private readState(writable = false): {
    list: UidList | null;
    state: ModseqState | null;
    keywords: string[];
    mine?: boolean;
  } {
    const parsed = this.parsed;
    parsed.state = readStateFile(join(this.dir, MODSEQ), parsed.state);
    // the list and keywords are read again when their identity changed, as Dovecot reads
    // dovecot-uidlist again when its inode, size or mtime did (a Dovecot on the same files
    // writes the list without the state, always by a rename), lock holder or not; and the
    // list when the state was written for another one
    const next = parsed.state?.value?.next;
    const before = parsed.list?.value;
    const stale = next !== undefined && before && before.next !== next;
    parsed.list = readList(join(this.dir, UIDLIST), parsed.list, !!stale);
    const after = parsed.list?.value;
    if (before && after && (after.validity !== before.validity || after.guid !== before.guid))
      this.replaced();
    parsed.keywords = readParsed(join(this.dir, KEYWORDS), parsed.keywords, parseKeywords);
    const list = parsed.list?.value ?? null;
    const state = parsed.state?.value ?? null;
    const keywords = parsed.keywords?.value ?? [];
    if (!writable) return { list, state, keywords: [...keywords] };
    return {
      // the entries are copied by the first change under the lock (lockedRun)
      list: list && { ...list },
      // values are replaced, never changed in place
      state: state && { ...state, msgs: { ...state.msgs } },
      keywords: [...keywords],
      mine: !!list && !!state && this.isOwn(list, state),
    };
  }

  /**
   * The folder was deleted and another created under its name (its UID list has another
   * UIDVALIDITY): nothing read of the old one is carried over. Its state files may have
   * the old ones' inodes, and so their identity, and are read whole; the snapshots say the
   * new UIDVALIDITY, which tells a holder of the old one's UIDs that they name nothing now.
   */
  private replaced(): void {
    const parsed = this.parsed;
    parsed.state = readStateFile(join(this.dir, MODSEQ), null);
    parsed.keywords = null;
    parsed.recent = null;
    this.cache = null;
    this.last = null;
    this.own = null;
    this.lastFiles = null;
    this.forceScan = true;
  }

  private lettersToFlags(letters: string, keywords: string[]): string[] {
    const flags: string[] = [];
    for (const c of letters) {
      if (LETTER_TO_FLAG[c]) flags.push(LETTER_TO_FLAG[c]);
      else if (c >= 'a' && c <= 'z') {
        const kw = keywords[c.charCodeAt(0) - 97];
        if (kw) flags.push(kw);
      }
    }
    return flags;
  }

  /**
   * The UIDVALIDITY of a folder being numbered for the first time: the time in seconds,
   * but above any the account issued before, so a folder deleted and created again
   * within a second gets a new one (RFC 3501 §2.3.1.1). The last one issued is kept in
   * the account's root (as Dovecot keeps `dovecot-uidvalidity`).
   */
  private async nextValidity(): Promise<number> {
    const now = Math.floor(Date.now() / 1000);
    if (!this.quotaDir) return now;
    const file = join(this.quotaDir, VALIDITY);
    const last = Number((await readText(file))?.trim()) || 0;
    const next = Math.max(now, last + 1);
    writeAtomic(file, `${next}\n`);
    return next;
  }

  /** Current state; assigns UIDs to new files and records external flag changes. */
  async snapshot(): Promise<FolderSnapshot> {
    const sig = this.signature();
    if (sig && this.cache?.sig === sig && Date.now() < this.cache.until) return this.cache.snap;
    // sessions of one folder ask after every command: while one read is under way and
    // this process changed nothing since it began, they share it
    if (this.reading?.generation === this.generation) return this.reading.snap;
    const reading = { generation: this.generation, snap: this.readSnapshot(sig) };
    this.reading = reading;
    try {
      return await reading.snap;
    } finally {
      if (this.reading === reading) this.reading = null;
    }
  }

  /**
   * `waited`: for this process's hold of the lock; `waitedOthers`: for another process's;
   * `again`: cur/ was read once already.
   */
  private async readSnapshot(
    sig: string | null,
    waited = false,
    again = false,
    waitedOthers = false,
  ): Promise<FolderSnapshot> {
    const { list, state, keywords } = this.readState();
    const held = this.lockHeld;
    if (held && !waited) {
      // this process is changing the folder: its last change is the latest there is (the
      // lock keeps other writers out), or else the one under way will be in a moment
      if (this.own && list && state && this.isOwn(list, state)) return this.own.snap;
      await held;
      return this.readSnapshot(this.signature(), true, false, waitedOthers);
    }
    const own = sig === null ? await this.ownSnapshot(list, state) : null;
    if (own) return own;
    // cur/ is no longer as the state says, or the state was written for another UID list,
    // and another process holds the lock: it is changing the folder, and writes the state
    // before the list (whose rename releases the lock). Read now, cur/ would disagree
    // with the files, and be read again under the lock.
    if (
      !waitedOthers &&
      list &&
      state?.cur &&
      (state.next !== list.next || this.curStat() !== state.cur) &&
      (await this.othersRelease())
    )
      return this.readSnapshot(this.signature(), waited, again, true);
    const { files, derived, own: ownSnap, cur } = await this.files(list, state);
    if (!list || !state || this.needsUpdate(files, list, state, derived && !ownSnap)) {
      if (!derived) {
        // cur/ changed while it was read, or since the state was: most often another
        // process's change under the lock, which its state tells. Read once more.
        if (!again && state && cur && (cur.before !== cur.after || cur.before !== state.cur))
          return this.readSnapshot(this.signature(), waited, true, waitedOthers);
        // cur/ as read disagrees with the state: the lock holder reads it again, whatever
        // the state says about it
        this.forceScan = true;
      }
      return this.withLock(async (ctx) => ctx.snap);
    }
    const kw = keywords.join('\n');
    const snap = this.build(files, list, state, keywords, this.last?.keywords === kw ? this.last.snap : null);
    // files derived from the state are trusted only until cur/ is due to be read whole
    this.cache = sig ? { sig, snap, until: derived ? this.lastFullScan + FULL_SCAN_MS : Infinity } : null;
    this.last = { snap, keywords: kw };
    // derived: cur/ is as the state's writer left it and new/ holds what it says (a
    // message delivered since would have needed the lock above)
    if (derived && !this.lockHeld && this.parsed.list?.value === list && this.parsed.state?.value === state)
      this.own = { list, state, keywords: this.parsed.keywords?.value ?? null, files, snap };
    return snap;
  }

  /**
   * Waits while another process holds the folder lock, at most HOLDER_WAIT_MS; true when
   * it was held and is released now. A lock older than a second is not waited for (a
   * holder's calls take milliseconds; an older one is most likely left by a crash).
   */
  private async othersRelease(): Promise<boolean> {
    if (this.lockHeld) return false;
    const lock = join(this.dir, `${UIDLIST}.lock`);
    const st = fsc.statSync(lock, { throwIfNoEntry: false });
    if (!st || Date.now() - st.mtimeMs > 1000) return false;
    const deadline = Date.now() + HOLDER_WAIT_MS;
    for (let wait = 1; fsc.existsSync(lock); wait = Math.min(wait * 2, 5)) {
      if (Date.now() > deadline) return false;
      await setTimeoutP(wait);
    }
    return true;
  }

  /**
   * Whether the files disagree with the list and state. Files `fromState` (derive) hold
   * every numbered message with the state's letters: only a delivery not numbered yet can
   * be there too.
   */
  private needsUpdate(
    files: Map<string, Scanned>,
    list: UidList,
    state: ModseqState,
    fromState = false,
  ): boolean {
    if (files.size !== list.entries.size) return true;
    if (fromState) return false;
    for (const [base, f] of files) {
      const uid = list.entries.get(base);
      if (uid === undefined) return true;
      const st = state.msgs[uid];
      if (!st || st[1] !== f.letters) return true;
    }
    return false;
  }

  /**
   * A snapshot of the reconciled state. With `prev` (a snapshot handed out before, under
   * the same keywords), a message whose file and MODSEQ are unchanged keeps its object:
   * a busy folder is read again after every change, and sessions then compare objects
   * instead of flags. Snapshots handed out are never changed afterwards.
   */
  private build(
    files: Map<string, Scanned>,
    list: UidList,
    state: ModseqState,
    keywords: string[],
    prev: FolderSnapshot | null = null,
  ): FolderSnapshot {
    const messages: MessageInfo[] = [];
    const old = prev?.messages ?? [];
    // within one UIDVALIDITY a UID names one file for good: the names need no comparing
    // (comparing every message's name, a string read anew with each list, was most of this)
    const sameUids = prev?.validity === list.validity;
    let j = 0;
    // the list is in UID order unless a writer appended out of order
    let last = 0;
    let sorted = true;
    for (const [base, uid] of list.entries) {
      const f = files.get(base);
      if (!f) continue;
      if (uid < last) sorted = false;
      last = uid;
      const modseq = state.msgs[uid]?.[0] ?? 1;
      while (j < old.length && old[j]!.uid < uid) j++;
      const o = old[j];
      if (o && o.uid === uid && o.modseq === modseq && (sameUids || o.base === base) && o.rel === f.rel) {
        messages.push(o);
        continue;
      }
      messages.push({
        uid,
        base,
        rel: f.rel,
        flags: this.lettersToFlags(f.letters, keywords),
        size: sizeOf(base) ?? -1,
        modseq: state.msgs[uid]?.[0] ?? 1,
      });
    }
    if (!sorted) messages.sort((a, b) => a.uid - b.uid);
    return {
      validity: list.validity,
      uidNext: list.next,
      highestModseq: state.highest,
      keywords: keywords.filter(Boolean),
      messages,
    };
  }

  /**
   * Runs `fn` under the folder lock with a freshly reconciled state, then writes the
   * UID list, keywords and MODSEQ state back if they changed. Calls that arrive while
   * the lock is held in this process wait in line and then run together under one
   * hold (group commit): one scan and one write for all of them, each answered once
   * the write is done. Sessions of one process thus never poll the dot-lock against
   * each other, and a busy folder costs a scan per batch, not per change.
   */
  private withLock<T>(fn: (ctx: LockedFolder) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.waiting.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      if (!this.locking) void this.drainLocked();
    });
  }

  private async drainLocked(): Promise<void> {
    this.locking = true;
    try {
      while (this.waiting.length) {
        const batch = this.waiting.splice(0, LOCK_BATCH);
        const settled: (() => void)[] = [];
        try {
          const { durable } = await this.lockedRun(async (ctx) => {
            for (let i = 0; i < batch.length; i++) {
              const { fn, resolve, reject } = batch[i]!;
              // each call sees the changes of those before it, in objects of its own
              if (i > 0) ctx.rebuild();
              try {
                const v = await fn(ctx);
                settled.push(() => resolve(v));
              } catch (err) {
                settled.push(() => reject(err));
              }
            }
          });
          // the next batch takes the lock while this one's writes are synced
          void durable.then(
            () => {
              for (const done of settled) done();
            },
            (err: unknown) => {
              for (const b of batch) b.reject(err);
            },
          );
        } catch (err) {
          for (const b of batch) b.reject(err);
        }
      }
    } finally {
      this.locking = false;
    }
  }

  /**
   * Runs `fn` under the folder lock and writes what it changed. The lock is released once
   * the files are written, before the UID list and cur/ are synced (another holder's sync
   * of the same list and directory covers these writes too): `durable` settles when they
   * are, and the callers' answers wait for it.
   */
  private async lockedRun(fn: (ctx: LockedFolder) => Promise<void>): Promise<{ durable: Promise<void> }> {
    const lock = await DotLock.acquire(join(this.dir, UIDLIST));
    let durable: Promise<void> = Promise.resolve();
    let released!: () => void;
    this.lockHeld = new Promise((r) => (released = r));
    try {
      const { list: oldList, state: oldState, keywords, mine } = this.readState(true);
      // the copies are not what this process wrote: whether they were is asked of the originals
      const { files, regular, own, derived } = await this.files(oldList, oldState, { mine: !!mine });
      const list: UidList = oldList ?? {
        validity: await this.nextValidity(),
        next: 1,
        guid: randomBytes(16).toString('hex'),
        entries: new Map(),
      };
      const state: ModseqState = oldState ?? { highest: 1, msgs: {}, expunged: [] };
      const edits = new ListEdits(list, !oldList);
      /** The list as read under the lock: where numbered messages are appended. */
      const listRead = this.parsed.list;
      /** The state file as read under the lock: where a change line is appended. */
      const stateRead = this.parsed.state;
      /** UIDs whose entry in `state.msgs` was set or deleted under this hold (StateChange). */
      const touched = new Set<number>();
      /** Expunges recorded under this hold, for the history (EXPUNGES). */
      const expunged: [number, number][] = [];
      let listDirty = !oldList;
      let stateDirty = !oldState;
      const kwBefore = keywords.join('\n');
      // reconcile: files gone, new files, flag letters changed by someone else. Files
      // derived from the state hold every message of the list with the state's letters
      // (see derive): only new/ can add to them.
      const gone = derived ? [] : [...list.entries].filter(([base]) => !files.has(base));
      const fresh =
        derived && files.size === list.entries.size
          ? []
          : [...files.keys()].filter((b) => !list.entries.has(b)).sort(compareNames);
      let bumped = false;
      const bump = () => {
        if (!bumped) state.highest++;
        bumped = true;
        return state.highest;
      };
      for (const [base, uid] of gone) {
        edits.remove(base);
        delete state.msgs[uid];
        touched.add(uid);
        expunged.push([uid, bump()]);
        listDirty = stateDirty = true;
      }
      for (const base of fresh) {
        const uid = edits.add(base);
        state.msgs[uid] = [bump(), files.get(base)!.letters];
        touched.add(uid);
        listDirty = stateDirty = true;
      }
      for (const [base, uid] of derived ? [] : list.entries) {
        const f = files.get(base)!;
        const st = state.msgs[uid];
        if (!st || st[1] !== f.letters) {
          state.msgs[uid] = [bump(), f.letters];
          touched.add(uid);
          stateDirty = true;
        }
      }
      const moved = this.moveToCur(files, list, !!derived && !fresh.length && !state.inNew?.length);
      const ctx = new LockedFolder(this, files, list, edits, state, keywords, expunged, touched);
      const kwNow = keywords.join('\n');
      // message objects are never changed (LockedFolder.rename makes new ones): the
      // snapshot of this process's last change is the folder's when nothing changed since
      ctx.snap =
        own && !listDirty && !stateDirty && !moved
          ? own
          : this.build(files, list, state, keywords, this.last?.keywords === kwNow ? this.last.snap : null);
      await fn(ctx);
      if (ctx.dirty) {
        listDirty ||= ctx.listDirty;
        stateDirty = true;
      }
      // the history before the state: a MODSEQ a reader sees has its expunges listed
      const legacy = state.expunged ?? [];
      if (legacy.length || expunged.length) {
        this.appendExpunges(legacy, expunged);
        state.expunged = [];
        stateDirty = true;
      }
      // what lets the next reader skip cur/ (see files()): the stat after every change in it
      const cur = regular ? (this.curStat() ?? undefined) : undefined;
      if (cur !== state.cur || (cur && stateDirty)) {
        const inNew: string[] = [];
        for (const [base, f] of files) if (f.rel.startsWith('new/')) inNew.push(base);
        state.cur = cur;
        state.inNew = cur ? inNew : undefined;
        stateDirty = true;
      }
      if (state.cur && state.next !== list.next) {
        state.next = list.next;
        stateDirty = true;
      }
      const kwText = keywords.join('\n') !== kwBefore ? formatKeywords(keywords) : null;
      // a new write count for every change of any of the three (see readState)
      if (listDirty || kwText !== null) stateDirty = true;
      if (stateDirty) state.w = (state.w ?? 0) + 1;
      // messages numbered, none removed: their lines are appended to the list as read, as
      // Dovecot appends its records (else, or when the file changed, it is written whole)
      const appended =
        listDirty && oldList && !edits.removed && edits.added.length ? formatUidEntries(edits.added) : null;
      this.own = null;
      const kwIdent = kwText !== null ? writeAtomic(join(this.dir, KEYWORDS), kwText) : null;
      const written = stateDirty ? this.writeState(stateRead, state, touched, legacy.length > 0) : null;
      // messages moved into cur/ under this hold: cur/ is synced while the UID list is, one
      // wait for every call of the batch (their answers wait for both)
      const curSynced = ctx.intoCur ? fsyncDir(join(this.dir, 'cur')) : null;
      curSynced?.catch(() => undefined);
      let listText: string | null = null;
      let listIdent: string | null = null;
      const syncs: Promise<void>[] = curSynced ? [curSynced] : [];
      const a = appended !== null ? appendUidList(join(this.dir, UIDLIST), listRead, appended) : null;
      if (a) {
        listIdent = a.ident;
        listText = listRead!.text + appended;
        syncs.push(a.synced);
      }
      if (listDirty && listIdent === null) {
        // a whole list replaces the old one by a rename, once synced: under the lock. The
        // rename is durable once the folder's directory is synced, and the answers wait
        // for that too (the UIDs they tell are in the new list only)
        listText = formatUidList(list);
        listIdent = await lock.commit(listText);
        syncs.push(fsyncDir(this.dir));
      }
      // not done until every sync is (see drainLocked): caught here, told there
      durable = Promise.all(syncs).then(() => undefined);
      durable.catch(() => undefined);
      this.cache = null;
      this.generation++;
      // what was written is what the next readState finds, unless someone else writes
      const parsed = this.parsed;
      if (kwText !== null) parsed.keywords = { text: kwText, ident: kwIdent, value: keywords };
      if (written) parsed.state = written;
      if (listText !== null) parsed.list = { text: listText, ident: listIdent, value: list };
      const kw = keywords.join('\n');
      const snap = ctx.rebuild();
      this.last = { snap, keywords: kw };
      this.own = {
        list: parsed.list?.value ?? null,
        state: parsed.state?.value ?? null,
        keywords: parsed.keywords?.value ?? null,
        // no longer changed: the next hold works on a copy (files())
        files,
        snap,
      };
    } finally {
      this.lockHeld = null;
      released();
      await lock.release();
    }
    return { durable };
  }

  /**
   * Moves numbered messages from new/ to cur/ (at most MOVE_BATCH), as Dovecot does: what
   * stays in new/ is named in every state written (ModseqState.inNew), so a folder of
   * deliveries nobody opened would make every change write every name. Not synced: after
   * a crash a message is found in new/ again, under the same UID. Returns how many moved.
   */
  private moveToCur(files: Map<string, Scanned>, list: UidList, noneInNew: boolean): number {
    if (noneInNew) return 0;
    let moved = 0;
    for (const [base, f] of files) {
      if (moved >= MOVE_BATCH) break;
      if (!f.rel.startsWith('new/') || !list.entries.has(base)) continue;
      const rel = `cur/${base}:2,`;
      try {
        fsc.renameSync(join(this.dir, f.rel), join(this.dir, rel));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        // moved or removed by someone else: read cur/ next time
        this.rescanNext();
        continue;
      }
      files.set(base, { rel, letters: '' });
      moved++;
    }
    return moved;
  }

  /**
   * Writes the state after a change under the lock: a line with what changed, appended to
   * the file `read` at the start of the hold, or else the whole state by a rename: when
   * there was no such file or it changed since, when the first line must change (an older
   * version's history moved out of it), or when the changes outgrew the state.
   */
  private writeState(
    read: StateRead | null,
    state: ModseqState,
    touched: Set<number>,
    rewrite: boolean,
  ): StateRead {
    const path = join(this.dir, MODSEQ);
    if (read?.value && read.appendable && read.ident && read.value.w === state.w! - 1 && !rewrite) {
      const msgs: Record<string, [number, string]> = {};
      const gone: number[] = [];
      for (const uid of touched) {
        const m = state.msgs[uid];
        if (m) msgs[uid] = m;
        else gone.push(uid);
      }
      const change: StateChange = {
        w: state.w!,
        highest: state.highest,
        msgs,
        gone,
        cur: state.cur ?? null,
        inNew: state.inNew ?? null,
        next: state.next ?? null,
      };
      const line = `${JSON.stringify(change)}\n`;
      const bytes = Buffer.byteLength(line);
      if (read.offset - read.baseLen + bytes <= Math.max(read.baseLen, STATE_CHANGES_MIN)) {
        const ident = appendState(path, read, line);
        if (ident) return { ...read, ident, offset: read.offset + bytes, value: state };
      }
    }
    const text = `${JSON.stringify({ w: state.w, ...state })}\n`;
    const ident = writeAtomic(path, text);
    const len = Buffer.byteLength(text);
    return {
      ident,
      ino: inoOf(ident),
      offset: len,
      baseW: state.w,
      baseLen: len,
      appendable: true,
      value: state,
    };
  }

  /**
   * Applies flag changes; with `unchangedSince`, messages modified later are not changed
   * (RFC 7162 §3.1.3). With `validity`, the UIDVALIDITY the UIDs were read under (see
   * sameFolder).
   */
  async store(
    changes: FlagChange[],
    unchangedSince?: number,
    validity?: number,
  ): Promise<{ changed: MessageInfo[]; failed: number[]; snapshot: FolderSnapshot }> {
    return this.withLock(async (ctx) => {
      this.sameFolder(ctx, validity);
      const failed: number[] = [];
      const changedUids: number[] = [];
      const modseq = ctx.state.highest + 1;
      for (const c of changes) {
        const m = ctx.byUid(c.uid);
        if (!m) continue;
        if (unchangedSince !== undefined && m.modseq > unchangedSince) {
          failed.push(c.uid);
          continue;
        }
        const cur = new Map(m.flags.map((f) => [f.toLowerCase(), f]));
        const next = c.op === 'set' ? new Map<string, string>() : new Map(cur);
        for (const f of c.flags) {
          if (c.op === 'remove') next.delete(f.toLowerCase());
          else next.set(f.toLowerCase(), f);
        }
        const same = next.size === cur.size && [...next.keys()].every((k) => cur.has(k));
        if (same) continue;
        ctx.rename(m, [...next.values()], modseq);
        changedUids.push(c.uid);
      }
      if (changedUids.length) ctx.state.highest = modseq;
      const snap = ctx.rebuild();
      const set = new Set(changedUids);
      return { changed: snap.messages.filter((m) => set.has(m.uid)), failed, snapshot: snap };
    });
  }

  /**
   * Throws FolderGoneError when the folder has another UIDVALIDITY than `validity`, the one
   * a caller's UIDs were read under: the folder was deleted and another created under its
   * name, whose messages those UIDs do not name (RFC 3501 §2.3.1.1). Nothing is changed.
   */
  private sameFolder(ctx: LockedFolder, validity: number | undefined): void {
    if (validity !== undefined && ctx.list.validity !== validity) throw new FolderGoneError(this.name);
  }

  /**
   * The lowest UID no session has claimed as \Recent yet: messages from it on are recent
   * to the next session that selects the folder read-write (RFC 3501 §2.3.2).
   */
  recentMark(fresh = false): number {
    // asked by every session at every new message: read again only when it was replaced,
    // or (`fresh`) under its lock whatever its identity says
    const parsed = this.parsed;
    parsed.recent = readParsed(join(this.dir, RECENT), fresh ? null : parsed.recent, parseRecentMark);
    return Math.max(parsed.recent?.value ?? 1, parsed.state?.value?.recent ?? 1);
  }

  /**
   * Claims the messages below `upTo` that no session has seen as \Recent yet (one session
   * sees a message as recent): returns the first UID the caller may show as recent.
   */
  async claimRecent(upTo: number): Promise<number> {
    if (this.recentMark() >= upTo) return upTo;
    const lock = await DotLock.acquire(join(this.dir, RECENT));
    try {
      const from = this.recentMark(true);
      if (from >= upTo) return upTo;
      // not synced: after a crash the messages are merely recent once more
      await lock.commit(`${upTo}\n`, { sync: false });
      return from;
    } finally {
      await lock.release();
    }
  }

  /** Removes messages; returns the UIDs removed. With `validity`, see sameFolder. */
  async expunge(uids: number[], validity?: number): Promise<number[]> {
    let bytes = 0;
    let count = 0;
    const removed = await this.withLock(async (ctx) => {
      this.sameFolder(ctx, validity);
      const removed: number[] = [];
      const modseq = ctx.state.highest + 1;
      for (const uid of uids) {
        const m = ctx.byUid(uid);
        if (!m) continue;
        const path = join(this.dir, m.rel);
        const size = m.size >= 0 ? m.size : (fsc.statSync(path, { throwIfNoEntry: false })?.size ?? -1);
        let gone = true;
        try {
          fsc.unlinkSync(path);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          gone = false;
        }
        if (gone && size >= 0) {
          bytes += size;
          count++;
        }
        ctx.remove(m, modseq);
        removed.push(uid);
      }
      if (removed.length) ctx.state.highest = modseq;
      return removed;
    });
    this.recordUsage(-bytes, -count);
    return removed;
  }

  /** Writes a new message (tmp -> fsync -> cur) and returns its UID (UIDPLUS). */
  async append(data: Buffer, flags: string[], date: Date): Promise<{ uid: number; validity: number }> {
    const r = await this.appendMany([{ data, flags, date }]);
    return { uid: r.uids[0]!, validity: r.validity };
  }

  /**
   * Writes several messages at once (MULTIAPPEND, RFC 3502): each is written and synced
   * in tmp/ first, then all get their UIDs under one lock, so a failure leaves none of
   * them in the folder and other sessions see them arrive together.
   */
  async appendMany(
    msgs: readonly { data: Buffer; flags: string[]; date: Date }[],
  ): Promise<{ uids: number[]; validity: number }> {
    const staged: Staged[] = [];
    try {
      for (const m of msgs) {
        // a message with LF line ends (a client may send one) also gets the size POP3
        // sends it with, as Dovecot writes it
        const sent = crlfSize(m.data);
        const base =
          uniqueName(m.data.length, this.host, m.date) + (sent === m.data.length ? '' : `,W=${sent}`);
        const tmp = join(this.dir, 'tmp', base);
        staged.push({ tmp, base, flags: m.flags, size: m.data.length });
        await writeDurable(tmp, m.data, m.date);
      }
      return await this.withLock(async (ctx) => {
        const uids: number[] = [];
        for (const x of staged) uids.push(this.addStaged(ctx, x));
        return { uids, validity: ctx.list.validity };
      });
    } finally {
      await this.settleStaged(staged);
    }
  }

  /** Moves a staged file into cur/ under the lock (LockedFolder.add), noting that it did. */
  private addStaged(ctx: LockedFolder, x: Staged): number {
    const uid = ctx.add(x.tmp, x.base, x.flags);
    x.moved = true;
    return uid;
  }

  /**
   * After an APPEND or COPY, answered or failed: what went into cur/ counts against the
   * quota (a batch that failed after the move, on a sync, leaves its messages there, and
   * the next change numbers them), and what did not is removed from tmp/.
   */
  private async settleStaged(staged: Staged[]): Promise<void> {
    const moved = staged.filter((x) => x.moved);
    this.recordUsage(
      moved.reduce((sum, x) => sum + x.size, 0),
      moved.length,
    );
    await Promise.all(staged.filter((x) => !x.moved).map((x) => fs.unlink(x.tmp).catch(() => undefined)));
  }

  /**
   * Copies messages from `src` (hard links where possible); returns [srcUid, dstUid] pairs.
   * Each copy has the flags its message has now (RFC 9051 §6.4.7), not those of `msgs`,
   * which another session may have changed since they were read; a message expunged
   * since throws MessageGoneError.
   */
  async copyFrom(
    src: MailFolder,
    msgs: MessageInfo[],
  ): Promise<{ validity: number; pairs: [number, number][] }> {
    const staged: (Staged & { uid: number })[] = [];
    const current = (await src.snapshot()).messages;
    try {
      for (const known of msgs) {
        const m = findUid(current, known.uid);
        if (!m) throw new MessageGoneError(known.uid);
        const from = await src.resolvePath(m);
        const size = m.size >= 0 ? m.size : (await fs.stat(from)).size;
        const base = uniqueStem(this.host) + sizeFields(m.base);
        const tmp = join(this.dir, 'tmp', base);
        try {
          await fs.link(from, tmp);
        } catch {
          await fs.copyFile(from, tmp);
        }
        staged.push({ tmp, base, flags: m.flags, uid: m.uid, size });
      }
      return await this.withLock(async (ctx) => {
        const pairs: [number, number][] = [];
        for (const s of staged) pairs.push([s.uid, this.addStaged(ctx, s)]);
        return { validity: ctx.list.validity, pairs };
      });
    } finally {
      await this.settleStaged(staged);
    }
  }

  /** Current path of a message, following a rename by another session. */
  async resolvePath(m: MessageInfo): Promise<string> {
    const p = join(this.dir, m.rel);
    try {
      await fs.access(p);
      return p;
    } catch {
      // renamed or expunged by another process: its state says where the file went, and
      // cur/ is read when the file is not there either
      this.cache = null;
      for (const force of [false, true]) {
        if (force) this.rescanNext();
        const now = findUid((await this.snapshot()).messages, m.uid);
        if (!now) throw new MessageGoneError(m.uid);
        if (force || (now.rel !== m.rel && fsc.existsSync(join(this.dir, now.rel))))
          return join(this.dir, now.rel);
      }
      throw new MessageGoneError(m.uid);
    }
  }

  /**
   * Header blocks of many messages, in order; null for a message that is gone. Reads
   * only the first bytes of each file (and its size when the name does not carry it), and
   * the rest only where the line ends must be counted (see HeaderBlock.sentSize). Files in the page cache (mail that arrived
   * lately, or was read lately) are read with blocking calls in slices of a few
   * milliseconds: that costs a tenth of the CPU time of going through libuv's thread
   * pool, and the event loop still turns between slices. As soon as reads are slow
   * (the data comes from the disk), the rest go through the thread pool, a bounded
   * number at a time, so a cold disk neither blocks the process nor is read serially.
   */
  async readHeaders(msgs: MessageInfo[]): Promise<(HeaderBlock | null)[]> {
    const out: (HeaderBlock | null)[] = new Array<HeaderBlock | null>(msgs.length).fill(null);
    const buf = Buffer.allocUnsafe(HEAD_READ);
    let i = 0;
    // reads in a row that took long; one alone is the scheduler (a busy machine), a run
    // of them is the disk
    let slowRun = 0;
    while (i < msgs.length && slowRun < SLOW_READS) {
      const sliceEnd = performance.now() + SYNC_SLICE_MS;
      for (; i < msgs.length && slowRun < SLOW_READS; i++) {
        const t = performance.now();
        if (t > sliceEnd) break;
        try {
          out[i] = readHeadSync(join(this.dir, msgs[i]!.rel), buf, msgs[i]!);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          out[i] = await this.readHeadMoved(msgs[i]!, buf);
        }
        slowRun = performance.now() - t > SLOW_READ_MS ? slowRun + 1 : 0;
      }
      if (i < msgs.length && slowRun < SLOW_READS) await new Promise((r) => setImmediate(r));
    }
    let next = i;
    const worker = async () => {
      const wbuf = Buffer.allocUnsafe(HEAD_READ);
      while (next < msgs.length) {
        const k = next++;
        try {
          out[k] = await readHeadAsync(join(this.dir, msgs[k]!.rel), wbuf, msgs[k]!);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          out[k] = await this.readHeadMoved(msgs[k]!, wbuf);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, msgs.length - i) }, worker));
    await this.countLineEnds(msgs, out);
    return out;
  }

  /** The file was renamed (flags changed elsewhere) or removed since the snapshot. */
  private async readHeadMoved(m: MessageInfo, buf: Buffer): Promise<HeaderBlock | null> {
    try {
      return await readHeadAsync(await this.resolvePath(m), buf, m);
    } catch (err) {
      if (err instanceof MessageGoneError || (err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /**
   * Reads whole, through the thread pool and a few at a time, the files whose first read
   * did not settle their size with CRLF line ends (sentSize -1), to count them; a file
   * gone meanwhile is null.
   */
  private async countLineEnds(msgs: MessageInfo[], out: (HeaderBlock | null)[]): Promise<void> {
    const todo = out.flatMap((b, k) => (b && b.sentSize < 0 ? [k] : []));
    const worker = async () => {
      const buf = Buffer.allocUnsafe(COUNT_CHUNK);
      for (let k; (k = todo.pop()) !== undefined;) {
        const m = msgs[k]!;
        try {
          out[k]!.sentSize = await countSentSize(join(this.dir, m.rel), buf).catch(async (err: unknown) => {
            if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
            return countSentSize(await this.resolvePath(m), buf);
          });
          out[k]!.counted = true;
        } catch (err) {
          if (!(err instanceof MessageGoneError) && (err as NodeJS.ErrnoException).code !== 'ENOENT')
            throw err;
          out[k] = null;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, todo.length) }, worker));
  }

  async read(m: MessageInfo): Promise<Buffer> {
    try {
      const path = join(this.dir, m.rel);
      // a small message in the page cache with a blocking read: four turns of the event
      // loop fewer (open, stat, read, close), each one as long as every session of a busy
      // process takes to run once; a read that took long (the disk) turns this off a while
      if (m.size >= 0 && m.size <= SYNC_READ_MAX && performance.now() > slowDiskUntil) {
        const t = performance.now();
        const data = fsc.readFileSync(path);
        if (performance.now() - t > SLOW_READ_MS) slowDiskUntil = performance.now() + SLOW_DISK_MS;
        return data;
      }
      return await fs.readFile(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      return fs.readFile(await this.resolvePath(m));
    }
  }

  /**
   * The message's file, open to be read a piece at a time (a large message sent as the
   * client takes it); the caller closes it. Renamed or expunged after this, it is still
   * read whole; gone already: MessageGoneError or ENOENT, as read() fails.
   */
  async open(m: MessageInfo): Promise<fs.FileHandle> {
    try {
      return await fs.open(join(this.dir, m.rel), constants.O_RDONLY);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      return fs.open(await this.resolvePath(m), constants.O_RDONLY);
    }
  }

  /** INTERNALDATE: the file's mtime, as Dovecot keeps it. */
  async internalDate(m: MessageInfo): Promise<Date> {
    const hit = this.dates.get(m.base);
    if (hit) return hit;
    let d: Date;
    try {
      d = (await fs.stat(await this.resolvePath(m))).mtime;
    } catch {
      d = new Date(Number(m.base.split('.')[0]) * 1000 || 0);
    }
    this.dates.set(m.base, d);
    return d;
  }

  /**
   * Adds expunges to the history (EXPUNGES), with those an older state still kept (`legacy`),
   * and cuts it back to the last EXPUNGED_KEPT once it passed EXPUNGES_TRIM_BYTES.
   */
  private appendExpunges(legacy: [number, number][], expunged: [number, number][]): void {
    const path = join(this.dir, EXPUNGES);
    const lines: string[] = [];
    // an older state kept only the last EXPUNGED_KEPT: what came before them is not known
    if (legacy.length >= EXPUNGED_KEPT) lines.push(`- ${legacy[0]![1] - 1}`);
    for (const [uid, ms] of legacy) lines.push(`${uid} ${ms}`);
    for (const [uid, ms] of expunged) lines.push(`${uid} ${ms}`);
    const fd = fsc.openSync(path, 'a', 0o600);
    let size: number;
    try {
      // from a new line: a line a crash cut short stays a line of its own, left out
      fsc.writeSync(fd, '\n' + lines.join('\n') + '\n');
      size = fsc.fstatSync(fd).size;
    } finally {
      fsc.closeSync(fd);
    }
    if (size <= EXPUNGES_TRIM_BYTES) return;
    const h = parseExpunges(fsc.readFileSync(path, 'utf8'));
    let keep = 0;
    for (let i = h.entries.length - 1, bytes = 0; i >= 0 && keep < EXPUNGED_KEPT; i--, keep++) {
      bytes += `${h.entries[i]![0]} ${h.entries[i]![1]}\n`.length;
      if (bytes > EXPUNGES_TRIM_BYTES / 2) break;
    }
    const drop = h.entries.length - keep;
    if (drop <= 0) return;
    const floor = Math.max(h.floor, h.entries[drop - 1]![1]);
    const kept = h.entries.slice(drop).map(([uid, ms]) => `${uid} ${ms}\n`);
    writeAtomic(path, `- ${floor}\n${kept.join('')}`);
  }

  /** UIDs expunged after `modseq` (QRESYNC VANISHED (EARLIER)); null if no longer known. */
  async vanishedSince(modseq: number): Promise<number[] | null> {
    // the state as every snapshot reads it: parsed again only when its text changed
    const { state } = this.readState();
    if (!state) return null;
    const text = await readText(join(this.dir, EXPUNGES));
    const h = text === null ? { floor: 0, entries: [] } : parseExpunges(text);
    // written by an older version and not changed since: its own history
    const legacy = state.expunged ?? [];
    if (legacy.length >= EXPUNGED_KEPT) h.floor = Math.max(h.floor, legacy[0]![1] - 1);
    if (modseq < h.floor) return null;
    const out = new Set<number>();
    for (const [uid, ms] of [...h.entries, ...legacy]) if (ms > modseq) out.add(uid);
    return [...out];
  }

  /** @internal a file was not where the state said: the next read lists cur/ whole. */
  rescanNext(): void {
    this.forceScan = true;
  }

  /** @internal letters for flags; allocates keyword letters (max 26, as Dovecot). */
  flagsToLetters(flags: string[], keywords: string[], keep: string): string {
    const letters = new Set<string>([...keep].filter((c) => !LETTER_TO_FLAG[c] && !(c >= 'a' && c <= 'z')));
    for (const f of flags) {
      const l = FLAG_TO_LETTER[f.toLowerCase()];
      if (l) {
        letters.add(l);
        continue;
      }
      if (f.startsWith('\\')) continue;
      let i = keywords.findIndex((k) => k?.toLowerCase() === f.toLowerCase());
      if (i < 0) {
        i = keywords.length < 26 ? keywords.length : -1;
        if (i < 0) continue;
        keywords[i] = f;
      }
      letters.add(String.fromCharCode(97 + i));
    }
    return [...letters].sort().join('');
  }
}

/**
 * The changes a lock holder makes to the UID list's entries. The entries are the parsed
 * ones, which readers share, until the first change copies them; what was added is kept,
 * so that a hold that only numbered messages appends their lines to the file.
 */
class ListEdits {
  removed = false;
  readonly added: [string, number][] = [];
  constructor(
    private readonly list: UidList,
    private copied: boolean,
  ) {}

  private entries(): Map<string, number> {
    if (!this.copied) this.list.entries = new Map(this.list.entries);
    this.copied = true;
    return this.list.entries;
  }

  /** Numbers `base` with the next UID. */
  add(base: string): number {
    const uid = this.list.next++;
    this.entries().set(base, uid);
    this.added.push([base, uid]);
    return uid;
  }

  remove(base: string): void {
    this.entries().delete(base);
    this.removed = true;
  }
}

/** The reconciled state seen while holding the lock. */
class LockedFolder {
  snap!: FolderSnapshot;
  dirty = false;
  listDirty = false;
  /** Whether a message was moved into cur/ (add): its name is synced before the lock is released. */
  intoCur = false;
  constructor(
    private readonly folder: MailFolder,
    private readonly files: Map<string, Scanned>,
    readonly list: UidList,
    /** Changes to the list's entries. */
    private readonly edits: ListEdits,
    readonly state: ModseqState,
    private readonly keywords: string[],
    /** Expunges made under this hold, for the history. */
    private readonly expunged: [number, number][],
    /** UIDs whose MODSEQ entry was set or deleted under this hold. */
    private readonly touched: Set<number>,
  ) {}

  /** Changes since `snap` was made: new objects of changed messages, UIDs removed, messages added (in UID order). */
  private changed = new Map<number, MessageInfo>();
  private removed = new Set<number>();
  private added: MessageInfo[] = [];

  /** The message as changed so far: a search of the snapshot (in UID order), not an index of every message per hold. */
  byUid(uid: number): MessageInfo | undefined {
    if (this.removed.has(uid)) return undefined;
    const m = this.changed.get(uid) ?? findUid(this.snap.messages, uid);
    if (m) return m;
    return this.added.length ? findUid(this.added, uid) : undefined;
  }

  /**
   * A snapshot with the changes made since the last one. Message objects are never changed
   * once made (rename and add make new ones), so the unchanged ones are shared: a batch of
   * STOREs on a large folder costs a walk of an array, not an object per message.
   */
  rebuild(): FolderSnapshot {
    let messages = this.snap.messages;
    if (this.changed.size || this.removed.size || this.added.length) {
      messages = [];
      for (const m of this.snap.messages) {
        if (this.removed.has(m.uid)) continue;
        messages.push(this.changed.get(m.uid) ?? m);
      }
      // UIDs are given in ascending order, above every one in use
      for (const m of this.added) messages.push(m);
      this.changed = new Map();
      this.removed = new Set();
      this.added = [];
    }
    this.snap = {
      validity: this.list.validity,
      uidNext: this.list.next,
      highestModseq: this.state.highest,
      keywords: this.keywords.filter(Boolean),
      messages,
    };
    return this.snap;
  }

  /** Gives `m` these flags; the message's object in later snapshots is a new one (`m` is not changed). */
  rename(m: MessageInfo, flags: string[], modseq: number): void {
    const f = this.files.get(m.base)!;
    const letters = this.folder.flagsToLetters(flags, this.keywords, f.letters);
    const rel = `cur/${m.base}:2,${letters}`;
    if (rel !== f.rel) {
      try {
        fsc.renameSync(join(this.folder.dir, f.rel), join(this.folder.dir, rel));
      } catch (err) {
        this.folder.rescanNext();
        throw err;
      }
    }
    this.files.set(m.base, { rel, letters });
    this.state.msgs[m.uid] = [modseq, letters];
    this.touched.add(m.uid);
    // a new object: the old one may be in snapshots already handed out
    const n: MessageInfo = { ...m, flags: lettersFlags(letters, this.keywords), rel, modseq };
    this.changed.set(m.uid, n);
    this.dirty = true;
  }

  remove(m: MessageInfo, modseq: number): void {
    this.files.delete(m.base);
    this.edits.remove(m.base);
    delete this.state.msgs[m.uid];
    this.touched.add(m.uid);
    this.expunged.push([m.uid, modseq]);
    this.changed.delete(m.uid);
    this.removed.add(m.uid);
    this.dirty = this.listDirty = true;
  }

  add(tmpPath: string, base: string, flags: string[]): number {
    const letters = this.folder.flagsToLetters(flags, this.keywords, '');
    const rel = `cur/${base}:2,${letters}`;
    fsc.renameSync(tmpPath, join(this.folder.dir, rel));
    this.intoCur = true;
    const uid = this.edits.add(base);
    this.state.highest++;
    this.state.msgs[uid] = [this.state.highest, letters];
    this.touched.add(uid);
    this.files.set(base, { rel, letters });
    const m: MessageInfo = {
      uid,
      base,
      rel,
      flags: lettersFlags(letters, this.keywords),
      size: sizeOf(base) ?? -1,
      modseq: this.state.highest,
    };
    this.added.push(m);
    this.dirty = this.listDirty = true;
    return uid;
  }
}

/** The message with this UID in `msgs` (in ascending UID order, as a snapshot's), by binary search. */
export function findUid(msgs: readonly MessageInfo[], uid: number): MessageInfo | undefined {
  let lo = 0;
  let hi = msgs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const m = msgs[mid]!;
    if (m.uid === uid) return m;
    if (m.uid < uid) lo = mid + 1;
    else hi = mid - 1;
  }
  return undefined;
}

function lettersFlags(letters: string, keywords: string[]): string[] {
  const flags: string[] = [];
  for (const c of letters) {
    if (LETTER_TO_FLAG[c]) flags.push(LETTER_TO_FLAG[c]);
    else if (c >= 'a' && c <= 'z' && keywords[c.charCodeAt(0) - 97])
      flags.push(keywords[c.charCodeAt(0) - 97]!);
  }
  return flags;
}

/** The parsed file after a read: the same value while the text is the same. */
function reparse<T>(
  prev: { text: string; ident: string | null; value: T } | null,
  read: { text: string; ident: string } | null,
  parse: (text: string, prev: { text: string; value: T } | null) => T,
): { text: string; ident: string | null; value: T } | null {
  if (!read) return null;
  if (prev?.text === read.text) {
    prev.ident = read.ident;
    return prev;
  }
  return { text: read.text, ident: read.ident, value: parse(read.text, prev) };
}

/** The expunge history file (EXPUNGES): entries up to `floor` are no longer listed. */
function parseExpunges(text: string): { floor: number; entries: [number, number][] } {
  let floor = 0;
  const entries: [number, number][] = [];
  for (const line of text.split('\n')) {
    const sp = line.indexOf(' ');
    if (sp < 0) continue;
    const ms = Number(line.slice(sp + 1));
    if (!Number.isSafeInteger(ms)) continue;
    if (line.startsWith('- ')) floor = Math.max(floor, ms);
    else {
      const uid = Number(line.slice(0, sp));
      // a line cut short by a crash is left out
      if (Number.isSafeInteger(uid) && uid > 0) entries.push([uid, ms]);
    }
  }
  return { floor, entries };
}

/** Whether the names in new/ are exactly the messages `bases` says are there. */
function sameBases(names: string[], bases: string[]): boolean {
  const set = new Set(bases);
  let n = 0;
  for (const name of names) {
    if (name.startsWith('.')) continue;
    if (!set.has(splitName(name).base)) return false;
    n++;
  }
  return n === set.size;
}

/** Maildir names start with the delivery second: order by it, then by name. */
function compareNames(a: string, b: string): number {
  const sa = parseInt(a, 10) || 0;
  const sb = parseInt(b, 10) || 0;
  return sa - sb || (a < b ? -1 : a > b ? 1 : 0);
}

/** First read of a message file; most header blocks fit. */
const HEAD_READ = 8192;
/** What a file read whole to count its line ends is read in. */
const COUNT_CHUNK = 64 * 1024;
/**
 * A header block is read in a buffer growing fourfold from HEAD_READ until it holds the
 * block or has passed this size (2 MiB then); a longer one is cut there.
 */
const HEAD_MAX = 1024 * 1024;
const SYNC_SLICE_MS = 4;
const SLOW_READ_MS = 1;
const SLOW_READS = 3;
const READ_CONCURRENCY = 16;
/** Messages up to this size are read by MailFolder.read with one blocking call. */
const SYNC_READ_MAX = 256 * 1024;
/** How long read() goes through the thread pool after a blocking read was slow. */
const SLOW_DISK_MS = 1000;
let slowDiskUntil = 0;

/** End of the header block in `buf[0..n)`: offset of the empty line, or -1. */
function headerEnd(buf: Buffer, n: number): number {
  if (n > 0 && buf[0] === 10) return 0;
  if (n > 1 && buf[0] === 13 && buf[1] === 10) return 0;
  for (let i = buf.indexOf(10); i >= 0 && i < n; i = buf.indexOf(10, i + 1)) {
    const c = buf[i + 1];
    if (i + 1 >= n) return -1;
    if (c === 10) return i + 1;
    if (c === 13 && i + 2 < n && buf[i + 2] === 10) return i + 1;
  }
  return -1;
}

/** What was read of a message file (its first `n` bytes of `buf`) as a HeaderBlock. */
function headBlock(
  buf: Buffer,
  n: number,
  end: number,
  m: MessageInfo,
  st: { size: number; mtimeMs: number },
): HeaderBlock {
  const text = buf.toString('latin1', 0, end < 0 ? n : end);
  // whole milliseconds, as stat().mtime (Date) gives them where the index is not used
  const mtimeMs = Math.trunc(st.mtimeMs);
  const read = buf.subarray(0, n);
  let sentSize = namedCrlfSize(m.base) ?? -1;
  if (sentSize < 0 && n >= st.size) sentSize = crlfSize(read);
  else if (sentSize < 0 && m.size >= 0 && !bareLfs(read)) sentSize = m.size;
  return { text, sentSize, counted: false, mtimeMs, cut: end < 0 && n === buf.length };
}

/**
 * The size of a message file with every line end CRLF, reading it whole in `buf`-sized
 * pieces.
 */
async function countSentSize(path: string, buf: Buffer): Promise<number> {
  const fd = await openP(path, 'r');
  try {
    let pos = 0;
    let extra = 0;
    // the last byte of the piece before: a CRLF may be split between two pieces
    let before = -1;
    for (let n; (n = (await readP(fd, buf, 0, buf.length, pos)).bytesRead) > 0; pos += n) {
      extra += bareLfs(buf.subarray(0, n), before);
      before = buf[n - 1]!;
    }
    return pos + extra;
  } finally {
    await closeP(fd);
  }
}

/** The file is stat'ed for its mtime, and for its size when the name does not carry it. */
function readHeadSync(path: string, first: Buffer, m: MessageInfo): HeaderBlock {
  const fd = fsc.openSync(path, 'r');
  try {
    const st = fsc.fstatSync(fd);
    let buf = first;
    let n = fsc.readSync(fd, buf, 0, buf.length, 0);
    let end = headerEnd(buf, n);
    while (end < 0 && n === buf.length && n < HEAD_MAX) {
      const bigger = Buffer.allocUnsafe(buf.length * 4);
      buf.copy(bigger, 0, 0, n);
      buf = bigger;
      n += fsc.readSync(fd, buf, n, buf.length - n, n);
      end = headerEnd(buf, n);
    }
    return headBlock(buf, n, end, m, st);
  } finally {
    fsc.closeSync(fd);
  }
}

const openP = promisify(fsc.open);
const fstatP = promisify(fsc.fstat);
const readP = promisify(fsc.read);
const closeP = promisify(fsc.close);
const fsyncP = promisify(fsc.fsync);
const fdatasyncP = promisify(fsc.fdatasync);
const setImmediateP = promisify(setImmediate);
/** What writeDurable writes between two turns of the event loop. */
const WRITE_CHUNK = 1024 * 1024;

async function readHeadAsync(path: string, first: Buffer, m: MessageInfo): Promise<HeaderBlock> {
  const fd = await openP(path, 'r');
  try {
    const st = await fstatP(fd);
    let buf = first;
    let n = (await readP(fd, buf, 0, buf.length, 0)).bytesRead;
    let end = headerEnd(buf, n);
    while (end < 0 && n === buf.length && n < HEAD_MAX) {
      const bigger = Buffer.allocUnsafe(buf.length * 4);
      buf.copy(bigger, 0, 0, n);
      buf = bigger;
      n += (await readP(fd, buf, n, buf.length - n, n)).bytesRead;
      end = headerEnd(buf, n);
    }
    return headBlock(buf, n, end, m, st);
  } finally {
    await closeP(fd);
  }
}

/**
 * The file times that every filesystem a Maildir lives on keeps as they are given, so
 * that writeDurable need not read them back: from 1970, as NFSv3 carries times as
 * unsigned 32-bit seconds (an earlier one arrives as a date after 2038), to the end of
 * 2037, before a signed 32-bit time ends (ext4 with 128-byte inodes, XFS without bigtime).
 */
const EVERY_FILESYSTEM_KEEPS = { from: Date.UTC(1970, 0, 1), until: Date.UTC(2038, 0, 1) };

/**
 * Writes a message file and fsyncs it, its mtime set to `date` (INTERNALDATE). The calls
 * are synchronous but for the fsync, and a big message is written a chunk per turn of the
 * event loop: every await of a busy process waits for all of its sessions to run once,
 * which made an APPEND of a few kilobytes take a dozen such turns.
 */
async function writeDurable(path: string, data: Buffer, date: Date): Promise<void> {
  const fd = fsc.openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
  try {
    for (let off = 0; off < data.length;) {
      if (off) await setImmediateP();
      off += fsc.writeSync(fd, data, off, Math.min(WRITE_CHUNK, data.length - off));
    }
    fsc.futimesSync(fd, date, date);
    // a filesystem keeps mtimes in a range of its own (ext4: 1901 to 2446) and moves one
    // outside it to the nearest end, without an error: read back unless every one keeps it
    const t = date.getTime();
    const kept = t >= EVERY_FILESYSTEM_KEEPS.from && t < EVERY_FILESYSTEM_KEEPS.until;
    if (!kept && Math.floor(fsc.fstatSync(fd).mtimeMs / 1000) !== Math.floor(t / 1000))
      throw new InternalDateError(date);
    await fsyncP(fd);
  } finally {
    fsc.closeSync(fd);
  }
}

/** Makes the names created in `dir` durable; only the fsync waits (see writeDurable). */
async function fsyncDir(dir: string): Promise<void> {
  const fd = fsc.openSync(dir, constants.O_RDONLY);
  try {
    await fsyncP(fd);
  } finally {
    fsc.closeSync(fd);
  }
}

export class FolderGoneError extends Error {
  constructor(name: string) {
    super(`folder ${name} no longer exists`);
  }
}

/** An INTERNALDATE (the file's mtime) the filesystem cannot hold; nothing was stored. */
export class InternalDateError extends Error {
  override readonly name = 'InternalDateError';
  constructor(readonly date: Date) {
    super(`the store cannot keep the date ${date.toISOString()}`);
  }
}

export class MessageGoneError extends Error {
  override readonly name = 'MessageGoneError';
  constructor(readonly uid: number) {
    super(`message ${uid} no longer exists`);
  }
}
