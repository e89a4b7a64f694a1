import {
  bodyStructure,
  ENVELOPE_FIELDS,
  envelopeText,
  headerLines,
  parseHeaderFields,
  parseMime,
  type Chunk,
  type HeaderField,
  type MimePart,
} from '@mailyard/imap-core';
import {
  IndexCacheFile,
  MessageGoneError,
  namedCrlfSize,
  withCrlf,
  type MailFolder,
  type MessageInfo,
} from '@mailyard/mailstore';

/**
 * Header fields kept for every message, as raw lines: ENVELOPE's, References for THREAD,
 * and the fields mail clients ask for in their listings with BODY.PEEK[HEADER.FIELDS
 * (...)] (Thunderbird, K-9 Mail, Apple Mail), so that a listing, even after a restart,
 * reads no message file. HEADER.FIELDS and SEARCH HEADER on any other field read it.
 */
export const INDEXED_FIELDS: ReadonlySet<string> = new Set([
  ...ENVELOPE_FIELDS,
  'references',
  'content-type',
  'priority',
  'x-priority',
  'importance',
  'x-msmail-priority',
  'newsgroups',
  'list-id',
  'list-post',
  'list-unsubscribe',
  'list-unsubscribe-post',
  'disposition-notification-to',
  'auto-submitted',
  'x-uniform-type-identifier',
  'x-universally-unique-identifier',
  'chat-version',
  'x-k9mail-identity',
]);

const indexed = (name: string) => INDEXED_FIELDS.has(name);

/**
 * What is known about one message file without reading it again. The header fields
 * are kept as their raw lines and parsed on first use: a listing after a restart needs
 * only the ENVELOPE of each message, and ten thousand small arrays less make loading the
 * index file twice as fast.
 */
export class CachedMessage {
  private parsed: HeaderField[] | null;

  constructor(
    /** ENVELOPE, one char per byte. */
    readonly envelope: string,
    /** The lines of the INDEXED_FIELDS in the header, raw (folding), CRLF line ends, in header order. */
    readonly header: string,
    /** RFC822.SIZE: the message's size as sent, every line end CRLF (see HeaderBlock.sentSize). */
    readonly size: number,
    /** Modification time (INTERNALDATE, ms), when it was read. */
    readonly date?: number,
    /** The header was longer than what is read of it: `header` may miss fields, HEADER.FIELDS reads the file. */
    readonly headerCut = false,
    /** BODYSTRUCTURE and BODY (one char per byte), once the whole message was parsed. */
    readonly bodyStructure?: string,
    readonly body?: string,
    fields?: HeaderField[],
  ) {
    this.parsed = fields ?? null;
  }

  /** From a message's header block (one char per byte, line ends CRLF as sent). */
  static fromHeader(block: string, size: number, date?: number, cut = false): CachedMessage {
    const header = headerLines(block, indexed);
    const fields = parseHeaderFields(header);
    return new CachedMessage(envelopeText(fields), header, size, date, cut, undefined, undefined, fields);
  }

  /** The indexed header fields, unfolded, values raw (one char per byte). */
  get fields(): HeaderField[] {
    this.parsed ??= parseHeaderFields(this.header);
    return this.parsed;
  }

  /**
   * BODY[HEADER.FIELDS (names)] when every name is one of INDEXED_FIELDS and the header
   * was not cut: the same bytes as from the file.
   */
  headerFields(names: string[]): string {
    return headerLines(this.header, (n) => names.includes(n)) + '\r\n';
  }

  withStructure(bodyStructure: string, body: string): CachedMessage {
    return new CachedMessage(
      this.envelope,
      this.header,
      this.size,
      this.date,
      this.headerCut,
      bodyStructure,
      body,
      this.parsed ?? undefined,
    );
  }
}

export interface FullMessage {
  data: Buffer;
  mime: MimePart;
}

export interface MessageCacheMetrics {
  /** Message files opened for their header block, or read whole (to send, or to count its line ends). */
  fileReads: { inc(labels: { part: 'header' | 'full' }, n?: number): void };
  /** Records written to index files. */
  indexAppends: { inc(n?: number): void };
  /** Index files rewritten (mostly stale, damaged, or not ours). */
  indexRewrites: { inc(): void };
}

export interface MessageCacheOptions {
  metrics?: MessageCacheMetrics;
  /** Most messages kept in memory across folders; least recently used folders go first. */
  maxEntries?: number;
  /** Bytes of whole messages kept for repeated body fetches. */
  maxFullBytes?: number;
  /** Keep the index file of each folder (`mailyard.index.cache`); off: memory only. */
  persist?: boolean;
  onError?: (err: unknown, dir: string) => void;
}

/** Records in the file before a rewrite is considered, and how many dead ones per live one. */
const REWRITE_MIN_RECORDS = 256;
/** How often the index file is read again for other instances' records, at most. */
const TAIL_READ_INTERVAL_MS = 2000;

interface FolderIndex {
  dir: string;
  entries: Map<string, CachedMessage>;
  file: IndexCacheFile<CachedMessage>;
  loading: Promise<void> | null;
  loaded: boolean;
  lastRead: number;
  /** Records and damaged lines in the file as last read. */
  fileRecords: number;
  fileBad: number;
  /** The file is not ours or mostly dead: the next write replaces it. */
  replace: boolean;
  pending: [string, CachedMessage][];
  writes: Promise<void>;
}

/**
 * First element of every record, and the file's format (`m<tag>`): a file of another
 * format is replaced, and records of an older layout (appended by an instance not yet
 * updated) are refused. Raise it with what a record holds or means. 2: the header as raw
 * lines of the INDEXED_FIELDS (1 had unfolded values). 3: the same layout, but the
 * ENVELOPE takes a bare address's display name from its comment, so the ENVELOPEs a file
 * of 2 holds are rendered again. 4: the same layout, but a multipart with boundary="" has
 * its parts, so the BODYSTRUCTUREs a file of 3 holds are rendered again. 5: the same
 * layout, but a message with LF line ends is sent with CRLF: its size and header lines
 * are those with CRLF, where a file of 4 holds them as on disk; and a BODYSTRUCTURE line
 * count is the body's line ends, where one of 4 counts text after the last as a line.
 * 6: the same layout, but a base64 or quoted-printable message/global part is a basic
 * part, where a file of 5 holds an envelope and structure read from its encoded text.
 */
const RECORD_TAG = 6;
export const INDEX_FORMAT = `m${RECORD_TAG}`;
const codec = { encode: encodeRecord, decode: decodeRecord, format: INDEX_FORMAT };

/**
 * On disk, an array: [RECORD_TAG, envelope, header lines, size, date or null, 1 if the header was
 * cut else 0, BODYSTRUCTURE, BODY] (the last two only once known). Strings, numbers and
 * nulls only: JSON.parse makes no object per record.
 */
function decodeRecord(v: unknown): CachedMessage | null {
  if (!Array.isArray(v) || v.length < 6 || v[0] !== RECORD_TAG) return null;
  const [, e, h, size, date, cut, bs, b] = v as unknown[];
  if (typeof e !== 'string' || typeof h !== 'string' || typeof size !== 'number') return null;
  if ((date !== null && typeof date !== 'number') || (cut !== 0 && cut !== 1)) return null;
  const withBs = typeof bs === 'string' && typeof b === 'string';
  return new CachedMessage(
    e,
    h,
    size,
    date ?? undefined,
    cut === 1,
    withBs ? bs : undefined,
    withBs ? b : undefined,
  );
}

function encodeRecord(m: CachedMessage): unknown {
  const r: unknown[] = [RECORD_TAG, m.envelope, m.header, m.size, m.date ?? null, m.headerCut ? 1 : 0];
  if (m.bodyStructure !== undefined) r.push(m.bodyStructure, m.body);
  return r;
}

/** Header text (one char per byte) with every bare LF made CRLF, as it is sent. */
function crlfText(text: string): string {
  return text.replace(/(?<!\r)\n/g, '\r\n');
}

/** Messages whose header blocks are read together for their sizes. */
const SIZE_CHUNK = 500;

function flatten(chunks: Chunk[]): string {
  let out = '';
  for (const c of chunks)
    out += typeof c === 'string' ? Buffer.from(c, 'utf8').toString('latin1') : c.toString('latin1');
  return out;
}

/**
 * Whether a structure in the IMAP4rev2 form the index keeps may read otherwise to an
 * IMAP4rev1 session: it has a message/global part (shown there as a basic part). A
 * parameter spelled so only costs a read of the message.
 */
export function rev1Differs(structure: string): boolean {
  return structure.includes('"MESSAGE" "GLOBAL" ');
}

/**
 * Parsed headers, ENVELOPE and BODYSTRUCTURE of message files, as Dovecot's
 * dovecot.index.cache: kept in memory, and in each folder's `mailyard.index.cache` so a
 * restarted process (or another instance) does not read the files again. Keyed by
 * Maildir base name: a message file's content never changes, so nothing is ever
 * invalidated, and a record of a message that is gone is simply never asked for (the
 * folder snapshot, read from the directories, decides which messages exist).
 */
export class MessageCache {
  private readonly folders = new Map<string, FolderIndex>();
  private entryCount = 0;
  private readonly full = new Map<string, { data: Buffer; mime: MimePart | null }>();
  private fullBytes = 0;
  private readonly maxEntries: number;
  private readonly maxFullBytes: number;
  private readonly persist: boolean;

  constructor(private readonly opts: MessageCacheOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 200_000;
    this.maxFullBytes = opts.maxFullBytes ?? 64 * 1024 * 1024;
    this.persist = opts.persist ?? true;
  }

  private folderIndex(dir: string): FolderIndex {
    let fi = this.folders.get(dir);
    if (fi) {
      // least recently used folders are dropped first
      this.folders.delete(dir);
      this.folders.set(dir, fi);
      return fi;
    }
    fi = {
      dir,
      entries: new Map(),
      file: new IndexCacheFile(dir, codec),
      loading: null,
      loaded: !this.persist,
      lastRead: 0,
      fileRecords: 0,
      fileBad: 0,
      replace: false,
      pending: [],
      writes: Promise.resolve(),
    };
    this.folders.set(dir, fi);
    return fi;
  }

  /** Reads the folder's index file: all of it the first time, then what others appended. */
  private readIndex(fi: FolderIndex): Promise<void> {
    fi.loading ??= (async () => {
      try {
        const r = await fi.file.read();
        if (r.fromStart) {
          fi.fileRecords = 0;
          fi.fileBad = 0;
        }
        fi.fileRecords += r.records.length;
        fi.fileBad += r.bad;
        if (r.foreign) fi.replace = true;
        // a folder evicted while its file was read is no longer counted
        const live = this.folders.get(fi.dir) === fi;
        for (const [base, m] of r.records) {
          if (live && !fi.entries.has(base)) this.entryCount++;
          fi.entries.set(base, m);
        }
        if (live) this.evict(fi);
      } catch (err) {
        this.opts.onError?.(err, fi.dir);
      } finally {
        fi.loaded = true;
        fi.lastRead = Date.now();
        fi.loading = null;
      }
    })();
    return fi.loading;
  }

  /**
   * At SELECT: reads the folder's index file while the client reads the SELECT
   * response, and rewrites the file when most of it is dead. Never fails.
   */
  async select(folder: MailFolder, live: MessageInfo[]): Promise<void> {
    const fi = this.folderIndex(folder.dir);
    if (!fi.loaded) await this.readIndex(fi);
    await this.compactIfStale(folder, live);
  }

  /** Makes sure the folder's index file was read (peek() answers from it afterwards). */
  async ready(folder: MailFolder): Promise<void> {
    const fi = this.folderIndex(folder.dir);
    if (!fi.loaded) await this.readIndex(fi);
  }

  /** The cached entry, if there is one (no I/O). */
  peek(folder: MailFolder, m: MessageInfo): CachedMessage | undefined {
    return this.folders.get(folder.dir)?.entries.get(m.base);
  }

  /**
   * Facts for many messages at once, in order (null: the message is gone): from
   * memory, else from the index file, else from the header blocks of the files, read
   * together (see MailFolder.readHeaders) and appended to the index file.
   */
  async headers(folder: MailFolder, msgs: MessageInfo[]): Promise<(CachedMessage | null)[]> {
    const fi = this.folderIndex(folder.dir);
    if (!fi.loaded) await this.readIndex(fi);
    let out = msgs.map((m) => fi.entries.get(m.base) ?? null);
    let misses = msgs.filter((_, i) => !out[i]);
    if (!misses.length) return out;
    if (this.persist && Date.now() - fi.lastRead > TAIL_READ_INTERVAL_MS) {
      await this.readIndex(fi);
      out = msgs.map((m) => fi.entries.get(m.base) ?? null);
      misses = msgs.filter((_, i) => !out[i]);
      if (!misses.length) return out;
    }
    const blocks = await folder.readHeaders(misses);
    this.opts.metrics?.fileReads.inc({ part: 'header' }, misses.length);
    const counted = blocks.reduce((n, b) => n + (b?.counted ? 1 : 0), 0);
    if (counted) this.opts.metrics?.fileReads.inc({ part: 'full' }, counted);
    const added: [string, CachedMessage][] = [];
    misses.forEach((m, i) => {
      const b = blocks[i];
      if (!b) return;
      added.push([m.base, CachedMessage.fromHeader(crlfText(b.text), b.sentSize, b.mtimeMs, b.cut)]);
    });
    this.add(fi, added);
    return msgs.map((m) => fi.entries.get(m.base) ?? null);
  }

  /** INTERNALDATE (ms): from the index when it was read with the header, else the file's mtime. */
  async internalDate(folder: MailFolder, m: MessageInfo): Promise<number> {
    return this.peek(folder, m)?.date ?? (await folder.internalDate(m)).getTime();
  }

  async header(folder: MailFolder, m: MessageInfo): Promise<CachedMessage> {
    const [c] = await this.headers(folder, [m]);
    if (!c) throw new MessageGoneError(m.uid);
    return c;
  }

  /**
   * RFC822.SIZE without I/O, when known: from the index, or from Dovecot's `,W=` in the
   * file name.
   */
  peekSize(folder: MailFolder, m: MessageInfo): number | undefined {
    return this.peek(folder, m)?.size ?? namedCrlfSize(m.base) ?? undefined;
  }

  /**
   * RFC822.SIZE: the message's size as FETCH BODY[] and POP3's RETR send it, every line
   * end CRLF (RFC 5322 §2.1), as Dovecot counts it; from the name or the index, else
   * found once as the header is read (see HeaderBlock.sentSize) and kept in the index.
   */
  async sentSize(folder: MailFolder, m: MessageInfo): Promise<number> {
    return this.peekSize(folder, m) ?? (await this.header(folder, m)).size;
  }

  /** RFC822.SIZE of many messages, in order, the unknown ones found together; -1 for one that is gone. */
  async sentSizes(folder: MailFolder, msgs: MessageInfo[]): Promise<number[]> {
    const fi = this.folderIndex(folder.dir);
    if (!fi.loaded) await this.readIndex(fi);
    const sizes = msgs.map((m) => this.peekSize(folder, m) ?? -1);
    const unknown = msgs.filter((_, i) => sizes[i]! < 0);
    for (let k = 0; k < unknown.length; k += SIZE_CHUNK)
      await this.headers(folder, unknown.slice(k, k + SIZE_CHUNK));
    return msgs.map((m, i) => (sizes[i]! >= 0 ? sizes[i]! : (this.peek(folder, m)?.size ?? -1)));
  }

  /** Values of one header field, unfolded and raw; fields outside INDEXED_FIELDS are read from the file. */
  async headerValues(folder: MailFolder, m: MessageInfo, name: string): Promise<string[]> {
    const fields = INDEXED_FIELDS.has(name)
      ? (await this.header(folder, m)).fields
      : await this.readFields(folder, m, name);
    return fields.filter((f) => f.name === name).map((f) => f.value);
  }

  private async readFields(folder: MailFolder, m: MessageInfo, name: string): Promise<HeaderField[]> {
    const hit = this.full.get(this.key(folder, m));
    if (hit?.mime) return hit.mime.headers;
    const [b] = await folder.readHeaders([m]);
    this.opts.metrics?.fileReads.inc({ part: 'header' });
    if (!b) throw new MessageGoneError(m.uid);
    return parseHeaderFields(b.text, new Set([name]));
  }

  private add(fi: FolderIndex, added: [string, CachedMessage][]): void {
    if (!added.length) return;
    const live = this.folders.get(fi.dir) === fi;
    for (const [base, c] of added) {
      if (live && !fi.entries.has(base)) this.entryCount++;
      fi.entries.set(base, c);
    }
    if (this.persist) {
      for (const a of added) fi.pending.push(a);
      void this.write(fi);
    }
    this.evict(fi);
  }

  /** Drops whole folders, least recently used first, down to maxEntries (their files stay). */
  private evict(keep: FolderIndex): void {
    for (const [dir, fi] of this.folders) {
      if (this.entryCount <= this.maxEntries) return;
      if (fi === keep) continue;
      this.folders.delete(dir);
      this.entryCount -= fi.entries.size;
    }
  }

  /** Appends pending records (or replaces the file), one write at a time per folder. */
  private write(fi: FolderIndex): Promise<void> {
    fi.writes = fi.writes.then(async () => {
      try {
        if (fi.replace) {
          fi.replace = false;
          fi.pending = [];
          await fi.file.rewrite(fi.entries);
          this.opts.metrics?.indexRewrites.inc();
          this.opts.metrics?.indexAppends.inc(fi.entries.size);
          return;
        }
        const batch = fi.pending;
        fi.pending = [];
        if (!batch.length) return;
        await fi.file.append(batch);
        this.opts.metrics?.indexAppends.inc(batch.length);
      } catch (err) {
        this.opts.onError?.(err, fi.dir);
      }
    });
    return fi.writes;
  }

  /**
   * Rewrites the folder's index file with only the messages that still exist when
   * most of its records are dead (expunged, written twice by racing instances, or
   * damaged). `live` is the folder's current snapshot.
   */
  compactIfStale(folder: MailFolder, live: MessageInfo[]): Promise<void> {
    const fi = this.folders.get(folder.dir);
    if (!fi || !this.persist || !fi.loaded || fi.replace) return Promise.resolve();
    const total = fi.fileRecords + fi.fileBad;
    if (total < REWRITE_MIN_RECORDS) return Promise.resolve();
    const bases = new Set(live.map((m) => m.base));
    let alive = 0;
    for (const base of fi.entries.keys()) if (bases.has(base)) alive++;
    if (total - alive <= alive) return Promise.resolve();
    for (const base of [...fi.entries.keys()]) {
      if (bases.has(base)) continue;
      fi.entries.delete(base);
      this.entryCount--;
    }
    fi.replace = true;
    fi.fileRecords = alive;
    fi.fileBad = 0;
    return this.write(fi);
  }

  /** Waits for pending index writes (at shutdown, and in tests). */
  async flush(): Promise<void> {
    await Promise.all([...this.folders.values()].map((fi) => fi.writes));
  }

  private key(folder: MailFolder, m: MessageInfo): string {
    return folder.dir + '\0' + m.base;
  }

  /** The message's bytes if they are in memory (no I/O). */
  peekRaw(folder: MailFolder, m: MessageInfo): Buffer | undefined {
    const k = this.key(folder, m);
    const hit = this.full.get(k);
    if (!hit) return undefined;
    this.full.delete(k);
    this.full.set(k, hit);
    return hit.data;
  }

  /** The message's bytes as sent (line ends CRLF), for BODY[] and RFC822: no MIME parsing. */
  async raw(folder: MailFolder, m: MessageInfo): Promise<Buffer> {
    const k = this.key(folder, m);
    const hit = this.full.get(k);
    if (hit) {
      this.full.delete(k);
      this.full.set(k, hit);
      return hit.data;
    }
    // RFC 5322 §2.1: lines end in CRLF; a file with LF line ends (another delivery
    // agent's, a store moved from Dovecot) is sent with CRLF, as Dovecot sends it
    const data = withCrlf(await folder.read(m));
    this.opts.metrics?.fileReads.inc({ part: 'full' });
    this.keepFull(k, { data, mime: null });
    return data;
  }

  /** The message's bytes and MIME structure, for sections, BINARY and SEARCH TEXT. */
  async message(folder: MailFolder, m: MessageInfo): Promise<FullMessage> {
    const k = this.key(folder, m);
    const hit = this.full.get(k);
    const data = hit ? hit.data : await this.raw(folder, m);
    const entry = this.full.get(k);
    if (entry?.mime) return { data, mime: entry.mime };
    const mime = parseMime(data);
    if (entry) entry.mime = mime;
    return { data, mime };
  }

  /**
   * BODYSTRUCTURE (extended) or BODY, one char per byte; from the index once known. The
   * index keeps the IMAP4rev2 form (`rev2`); one with a message/global part is rendered
   * again from the message for an IMAP4rev1 session (see `rev1Differs`).
   */
  async structure(folder: MailFolder, m: MessageInfo, extended: boolean, rev2: boolean): Promise<string> {
    const c = this.peek(folder, m);
    if (c?.bodyStructure !== undefined && (rev2 || !rev1Differs(c.bodyStructure)))
      return extended ? c.bodyStructure : c.body!;
    const { data, mime } = await this.message(folder, m);
    if (c?.bodyStructure !== undefined) return flatten(bodyStructure(mime, extended, rev2));
    const bs = flatten(bodyStructure(mime, true, true));
    const body = flatten(bodyStructure(mime, false, true));
    // the whole header is at hand here: it replaces a record whose header was cut
    const base =
      c && !c.headerCut
        ? c
        : CachedMessage.fromHeader(
            data.toString('latin1', 0, mime.bodyStart),
            c?.size ?? data.length,
            c?.date,
          );
    const next = base.withStructure(bs, body);
    const fi = this.folderIndex(folder.dir);
    this.add(fi, [[m.base, next]]);
    if (!rev2 && rev1Differs(bs)) return flatten(bodyStructure(mime, extended, false));
    return extended ? bs : body;
  }

  private keepFull(k: string, e: { data: Buffer; mime: MimePart | null }): void {
    if (e.data.length >= this.maxFullBytes / 8) return;
    this.full.set(k, e);
    this.fullBytes += e.data.length;
    while (this.fullBytes > this.maxFullBytes) {
      const [oldKey, old] = this.full.entries().next().value!;
      this.full.delete(oldKey);
      this.fullBytes -= old.data.length;
    }
  }
}
