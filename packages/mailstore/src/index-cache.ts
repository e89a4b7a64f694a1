import { randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';

/**
 * Per-folder file of facts parsed out of message files (what Dovecot keeps in
 * `dovecot.index.cache`). Dovecot ignores it: it is not a `dovecot*` file and does not
 * start with a dot, so it is neither its own state nor a Maildir++ folder.
 */
export const INDEX_CACHE = 'mailyard.index.cache';

/**
 * First line of the file, with the codec's format; a file that starts otherwise (another
 * format of the records, or not ours) is not read and gets replaced.
 */
const MAGIC = 'mailyard index cache 1';
/** Most bytes given to one write(): whole records only, so a short write loses a tail. */
const WRITE_MAX = 256 * 1024;
/**
 * A larger file is not read but replaced: the index is a cache, and its size must not
 * decide how much memory the service takes (~1 KiB a message: 256 MiB is ~250,000).
 */
const READ_MAX = 256 * 1024 * 1024;

/** How the caller's records look on disk: `encode` must give something JSON can hold. */
export interface IndexCodec<T> {
  encode(value: T): unknown;
  /** null: not a record this version understands (counted as damaged). */
  decode(value: unknown): T | null;
  /** Names the records' layout in the first line: a file of another layout is replaced whole. */
  format?: string;
}

export interface IndexRead<T> {
  /** Records in file order; a later record for the same key replaces an earlier one. */
  records: [string, T][];
  /** Lines that failed their checksum or did not decode (torn writes, corruption). */
  bad: number;
  /** True when this read started over from the beginning (first read, or the file was replaced). */
  fromStart: boolean;
  /** The file exists but is not ours (or not this version): replace it instead of appending. */
  foreign: boolean;
}

/**
 * The file's format and its concurrency rules; what a record holds is the caller's.
 *
 * One record per line: `<crc32 of the JSON, 8 hex digits> <JSON [key, value]>\n`.
 * - Appends open the file with O_APPEND and give each batch of whole records to one
 *   write(), so writers on several instances never interleave inside a record (local
 *   file systems hold the inode lock for the whole write).
 * - Every batch starts with a newline: a record torn by a crash or a full disk ends at
 *   the next batch instead of swallowing its first record. Readers skip empty lines,
 *   lines whose checksum does not match, and a last line without its newline.
 * - Rewrites (compaction) write a temporary file and rename it over the old one;
 *   readers notice the new inode and read from the start. Appends that race a rewrite
 *   may land in the replaced file and are lost, which costs a re-read, never a wrong
 *   answer: keys are Maildir base names, whose content never changes.
 */
export class IndexCacheFile<T> {
  readonly path: string;
  /** Bytes consumed so far (up to the last complete line) and the inode they came from. */
  private offset = 0;
  private ino = -1;
  private readonly magic: string;

  constructor(
    dir: string,
    private readonly codec: IndexCodec<T>,
  ) {
    this.path = join(dir, INDEX_CACHE);
    this.magic = `${MAGIC}${codec.format ? ' ' + codec.format : ''}\n`;
  }

  /** Records added since the last read, or all of them when the file is new to us. */
  async read(): Promise<IndexRead<T>> {
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(this.path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      // a symbolic link is never followed: replaced like any file that is not an index
      if ((err as NodeJS.ErrnoException).code === 'ELOOP')
        return { records: [], bad: 0, fromStart: true, foreign: true };
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      const fromStart = this.ino !== 0;
      this.ino = 0;
      this.offset = 0;
      return { records: [], bad: 0, fromStart, foreign: false };
    }
    try {
      const st = await fh.stat();
      const fromStart = st.ino !== this.ino || st.size < this.offset;
      if (fromStart) {
        this.ino = st.ino;
        this.offset = 0;
      }
      const length = st.size - this.offset;
      if (length <= 0) return { records: [], bad: 0, fromStart, foreign: false };
      if (!st.isFile() || st.size > READ_MAX) return { records: [], bad: 0, fromStart, foreign: true };
      const buf = Buffer.allocUnsafe(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, this.offset + got);
        if (!bytesRead) break;
        got += bytesRead;
      }
      // the file shrank since fstat: start again next time
      if (!got) return { records: [], bad: 0, fromStart, foreign: false };
      let pos = 0;
      if (this.offset === 0) {
        if (got < this.magic.length) return { records: [], bad: 0, fromStart, foreign: got > 0 };
        if (buf.toString('latin1', 0, this.magic.length) !== this.magic)
          return { records: [], bad: 0, fromStart, foreign: true };
        pos = this.magic.length;
      }
      const end = buf.subarray(0, got).lastIndexOf(10) + 1;
      const { records, bad } = this.parse(buf, Math.min(pos, end), end);
      this.offset += Math.max(end, pos);
      return { records, bad, fromStart, foreign: false };
    } finally {
      await fh.close();
    }
  }

  private parse(buf: Buffer, start: number, end: number): { records: [string, T][]; bad: number } {
    const records: [string, T][] = [];
    let bad = 0;
    for (let pos = start; pos < end;) {
      const nl = buf.indexOf(10, pos);
      const lineEnd = nl < 0 || nl > end ? end : nl;
      const rec = lineEnd > pos ? this.parseLine(buf, pos, lineEnd) : undefined;
      if (rec === null) bad++;
      else if (rec) records.push(rec);
      pos = lineEnd + 1;
    }
    return { records, bad };
  }

  /** A record, null for a damaged line. */
  private parseLine(buf: Buffer, start: number, end: number): [string, T] | null {
    if (end - start < 10 || buf[start + 8] !== 32) return null;
    const sum = Number.parseInt(buf.toString('latin1', start, start + 8), 16);
    if (Number.isNaN(sum) || crc32(buf.subarray(start + 9, end)) !== sum) return null;
    try {
      const v = JSON.parse(buf.toString('utf8', start + 9, end)) as unknown;
      if (!Array.isArray(v) || v.length !== 2 || typeof v[0] !== 'string') return null;
      const value = this.codec.decode(v[1]);
      return value === null ? null : [v[0], value];
    } catch {
      return null;
    }
  }

  private encode(key: string, value: T): string {
    const json = JSON.stringify([key, this.codec.encode(value)]);
    return `${crc32(json).toString(16).padStart(8, '0')} ${json}\n`;
  }

  /** Appends records; each batch of up to 256 KiB is one write(). */
  async append(records: Iterable<[string, T]>): Promise<void> {
    const fh = await fs.open(
      this.path,
      constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      // a new file gets its first line; two instances creating it at once both write
      // one, and the second counts as one damaged line
      let batch = '';
      let head = (await fh.stat()).size === 0 ? this.magic : '\n';
      const write = async () => {
        const data = Buffer.from(head + batch, 'utf8');
        batch = '';
        head = '\n';
        const { bytesWritten } = await fh.write(data, 0, data.length, null);
        return bytesWritten === data.length;
      };
      for (const [key, value] of records) {
        batch += this.encode(key, value);
        if (batch.length >= WRITE_MAX && !(await write())) return;
      }
      if (batch) await write();
    } finally {
      await fh.close();
    }
  }

  /** Replaces the file with exactly these records (compaction, or a file that was not ours). */
  async rewrite(records: Iterable<[string, T]>): Promise<void> {
    const tmp = `${this.path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const parts: string[] = [this.magic];
    for (const [key, value] of records) parts.push(this.encode(key, value));
    try {
      await fs.writeFile(tmp, parts.join(''), { mode: 0o600 });
      await fs.rename(tmp, this.path);
    } catch (err) {
      await fs.unlink(tmp).catch(() => undefined);
      throw err;
    }
    // our own rewrite: the next read starts over and sees exactly these records again,
    // which is correct if wasteful; rewrites are rare
  }
}
