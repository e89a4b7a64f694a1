import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { MailFolder } from './folder.js';
import { DotLock } from './lock.js';
import { accountDir, folderDir, folderDirName } from './maildir.js';
import { forgetUsage, readUsage, type Counted, type Usage } from './maildirsize.js';

/** RFC 6154 special-use folders every account gets, by name. */
export const SPECIAL_USE: Record<string, string> = {
  Sent: '\\Sent',
  Drafts: '\\Drafts',
  Junk: '\\Junk',
  Trash: '\\Trash',
  Archive: '\\Archive',
};

export interface FolderEntry {
  name: string;
  specialUse: string | null;
}

export class FolderError extends Error {
  constructor(
    /** `limit`: a valid name the store cannot hold (too long, too deep). */
    readonly code: 'exists' | 'nonexistent' | 'inbox' | 'invalid' | 'limit',
    message: string,
  ) {
    super(message);
  }
}

/** Maildir++ directory name (`.Work.Projects`) back to the folder name (`Work/Projects`). */
export function folderNameFromDir(dirName: string): string | null {
  if (!dirName.startsWith('.') || dirName === '.' || dirName === '..') return null;
  return dirName
    .slice(1)
    .split('.')
    .map((p) => p.replace(/%([0-9a-fA-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))))
    .join('/');
}

/**
 * Longest Maildir++ directory name, in bytes once encoded (UTF-8, `%2e` for a dot...). The
 * whole hierarchy is one directory (`.Work.Projects`), so this is also the bound on a
 * name's total length: file systems cap a path component at 255 bytes.
 */
export const MAX_FOLDER_DIR_BYTES = 255;
/**
 * Deepest folder hierarchy (Dovecot's MAILBOX_MAX_HIERARCHY_LEVELS): no client builds a
 * name of hundreds of one-letter levels and no renaming of a parent makes its children
 * deeper than a client could create.
 */
export const MAX_FOLDER_DEPTH = 20;

export function validFolderName(name: string): boolean {
  if (!name) return false;
  // a lone surrogate would be written to disk as U+FFFD: two names, one directory
  if (/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(name)) return false;
  const parts = name.split('/');
  return parts.every((p) => p.length > 0 && !/[\x00-\x1f\x7f]/.test(p) && p !== '.' && p !== '..');
}

/** Throws the FolderError a name to be created gets: `invalid` for a malformed one, `limit` past the store's bounds. */
export function checkFolderName(name: string): void {
  if (!validFolderName(name)) throw new FolderError('invalid', 'invalid folder name');
  if (name.split('/').length > MAX_FOLDER_DEPTH)
    throw new FolderError('limit', `folder hierarchy deeper than ${MAX_FOLDER_DEPTH} levels`);
  if (Buffer.byteLength(folderDirName(name)) > MAX_FOLDER_DIR_BYTES)
    throw new FolderError(
      'limit',
      `folder name longer than the store can hold (${MAX_FOLDER_DIR_BYTES} bytes)`,
    );
}

/**
 * MailFolder objects an account keeps (each about a kilobyte, and its snapshot): more than
 * any real account has folders. Past it the least recently asked for goes, so names a
 * client asks about and never creates (STATUS, SELECT of anything) do not pile up for the
 * life of the process. A folder dropped while a session still holds it is safe: a second
 * MailFolder on the same directory coordinates through the files, as another process does.
 */
const FOLDERS_KEPT = 1000;

const errCode = (err: unknown) => (err as NodeJS.ErrnoException | null)?.code;

/** One account's folders: listing, create/rename/delete, subscriptions (Dovecot's `subscriptions` file). */
export class MailAccount {
  /** In least recently used order. */
  private readonly folders = new Map<string, MailFolder>();

  constructor(
    readonly root: string,
    readonly account: string,
    private readonly host?: string,
  ) {}

  get dir(): string {
    return accountDir(this.root, this.account);
  }

  /**
   * The folder of that name, which may not exist yet. A name no folder can have is
   * FolderError('nonexistent'): "" would otherwise be the account's own directory (INBOX),
   * "/" the domain's.
   */
  folder(name: string): MailFolder {
    const key = name.toUpperCase() === 'INBOX' ? 'INBOX' : name;
    if (key !== 'INBOX' && !validFolderName(key)) throw new FolderError('nonexistent', 'no such folder');
    let f = this.folders.get(key);
    if (f) this.folders.delete(key);
    else f = new MailFolder(folderDir(this.root, this.account, key), key, this.host, this.dir);
    this.folders.set(key, f);
    if (this.folders.size > FOLDERS_KEPT) this.folders.delete(this.folders.keys().next().value!);
    return f;
  }

  /**
   * Run at every IMAP and POP3 login: INBOX and the special-use folders, created when
   * missing and subscribed, also when delivery created one before the first login (Junk
   * for the first spam), as Dovecot's `auto = subscribe`: a client that shows only
   * subscribed folders shows them all. A special-use folder the user unsubscribed is
   * subscribed again at the next login, as with Dovecot. The subscriptions are read once;
   * only when one is missing are they read again and changed under their lock, as several
   * logins may run this at once, in one process or many.
   */
  async ensureDefaults(): Promise<void> {
    await this.folder('INBOX').ensure();
    const names = Object.keys(SPECIAL_USE);
    for (const name of names) {
      const f = this.folder(name);
      if (!(await f.exists())) await f.ensure();
    }
    let subs: Set<string>;
    try {
      subs = new Set(await this.subscriptions());
    } catch {
      // a list the store cannot read now is left as it is, not taken as empty and written
      // over: the login goes on, LSUB says the store failed, a later login subscribes them
      return;
    }
    if (names.some((n) => !subs.has(n))) await this.updateSubscriptions((now) => [...now, ...names]);
  }

  async list(): Promise<FolderEntry[]> {
    const out: FolderEntry[] = [{ name: 'INBOX', specialUse: null }];
    let names: string[];
    try {
      names = await fs.readdir(this.dir);
    } catch (err) {
      // an account not yet written to has INBOX alone; any other error is the store failing
      if (errCode(err) === 'ENOENT') return out;
      throw err;
    }
    for (const d of names.sort()) {
      const name = folderNameFromDir(d);
      if (!name) continue;
      try {
        await fs.access(join(this.dir, d, 'cur'));
      } catch (err) {
        // no folder (a file, a directory without cur/). One the store cannot read now is
        // listed all the same: left out, a client would take it for deleted; failing the
        // whole list would hide every other folder. Opening it fails until it reads again.
        if (errCode(err) === 'ENOENT' || errCode(err) === 'ENOTDIR') continue;
      }
      out.push({ name, specialUse: SPECIAL_USE[name] ?? null });
    }
    return out;
  }

  async create(name: string): Promise<void> {
    if (name.toUpperCase() === 'INBOX') throw new FolderError('exists', 'INBOX always exists');
    checkFolderName(name);
    const f = this.folder(name);
    if (await f.exists()) throw new FolderError('exists', 'folder already exists');
    await f.ensure();
  }

  async delete(name: string): Promise<void> {
    if (name.toUpperCase() === 'INBOX') throw new FolderError('inbox', 'INBOX cannot be deleted');
    const f = this.folder(name);
    if (!(await f.exists())) throw new FolderError('nonexistent', 'no such folder');
    // rename out of the way first so no session sees a half-deleted folder
    const trash = join(this.dir, 'tmp', `deleted.${process.pid}.${Date.now()}`);
    await fs.rename(f.dir, trash);
    await fs.rm(trash, { recursive: true, force: true });
    this.folders.delete(name);
    // its messages no longer count: the next read of the usage counts again
    await forgetUsage(this.dir);
  }

  /** Renames a folder and its children (RFC 9051 §6.3.6); renaming INBOX moves its messages. */
  async rename(from: string, to: string): Promise<void> {
    checkFolderName(to);
    const src = this.folder(from);
    const all = await this.list();
    const moves = all.filter((f) => f.name === from || (from !== 'INBOX' && f.name.startsWith(from + '/')));
    // a name that is only the level above folders (LIST shows it \Noselect) is renamed
    // with them, as Dovecot does; a name with nothing under it is no folder
    if (!moves.length) throw new FolderError('nonexistent', 'no such folder');
    if (await this.folder(to).exists()) throw new FolderError('exists', 'target folder already exists');
    // a folder cannot go inside itself: the level its new name hangs from is moving with it
    if (from !== 'INBOX' && to.startsWith(from + '/'))
      throw new FolderError('invalid', 'a folder cannot be renamed into itself');
    if (from === 'INBOX') {
      await this.create(to);
      const snap = await src.snapshot();
      await this.folder(to).copyFrom(src, snap.messages);
      await src.expunge(snap.messages.map((m) => m.uid));
      return;
    }
    // every new name is checked before anything moves: a child that would not fit, or
    // whose new name is taken, leaves the tree as it was
    for (const f of moves) checkFolderName(to + f.name.slice(from.length));
    for (const f of moves)
      if (await this.folder(to + f.name.slice(from.length)).exists())
        throw new FolderError('exists', 'a folder under the new name already exists');
    // the subscriptions follow the folders: a list that cannot be read fails the RENAME
    // before anything moves, not after, when its NO would tell of a rename that was made
    await this.subscriptions();
    for (const f of moves) {
      const target = to + f.name.slice(from.length);
      await fs.rename(folderDir(this.root, this.account, f.name), folderDir(this.root, this.account, target));
      this.folders.delete(f.name);
    }
    await this.updateSubscriptions((subs) =>
      subs.map((s) => (s === from || s.startsWith(from + '/') ? to + s.slice(from.length) : s)),
    );
  }

  /**
   * The subscribed names; none before the first subscription. Only a missing file means
   * none: a list that cannot be read (EIO, EACCES, EMFILE) throws, since taken as empty it
   * would be shown so, and the next change would write it over with that one name.
   */
  async subscriptions(): Promise<string[]> {
    let text: string;
    try {
      text = await fs.readFile(join(this.dir, 'subscriptions'), 'utf8');
    } catch (err) {
      if (errCode(err) === 'ENOENT') return [];
      throw err;
    }
    const lines = text.split('\n');
    // Dovecot 2.3 writes a "V\t2" header and tab-separated hierarchy
    if (lines[0]?.startsWith('V\t')) {
      return lines
        .slice(2)
        .filter(Boolean)
        .map((l) => l.replace(/\t/g, '/'));
    }
    return lines.filter(Boolean);
  }

  /**
   * Changes the subscriptions under `subscriptions.lock`, Dovecot's dot-lock on the same
   * file: sessions in other processes (workers, instances, a Dovecot) subscribing at once
   * each add their name instead of the last writer's list replacing the others'. The new
   * list is written into the lock file and renamed over the old one.
   */
  async updateSubscriptions(change: (subs: string[]) => string[]): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    const lock = await DotLock.acquire(join(this.dir, 'subscriptions'), {
      timeoutMs: 10_000,
      staleMs: 30_000,
    });
    try {
      const before = await this.subscriptions();
      const after = [...new Set(change(before))];
      if (after.join('\n') === before.join('\n')) return;
      await lock.commit(after.map((n) => n + '\n').join(''));
    } finally {
      await lock.release();
    }
  }

  async subscribe(name: string): Promise<void> {
    await this.updateSubscriptions((subs) => [...subs, name]);
  }

  async unsubscribe(name: string): Promise<void> {
    await this.updateSubscriptions((subs) => subs.filter((x) => x !== name));
  }

  /**
   * Bytes and messages stored in every folder. With a quota `limit`, from the Maildir++
   * `maildirsize` file (created on first use, kept up to date by every delivery, APPEND,
   * COPY and expunge); without one, counted from the `,S=` sizes in the file names.
   */
  async usage(limit = 0): Promise<Usage> {
    if (limit > 0) return readUsage(this.dir, limit, () => this.count());
    return (await this.count()).usage;
  }

  private async count(): Promise<Counted> {
    let bytes = 0;
    let messages = 0;
    const dirs: Counted['dirs'] = [];
    for (const f of await this.list()) {
      for (const sub of ['new', 'cur']) {
        const dir = join(folderDir(this.root, this.account, f.name), sub);
        let names: string[] = [];
        try {
          // the time first: a change during the walk shows as a newer one afterwards
          const statAt = BigInt(Date.now()) * 1_000_000n;
          dirs.push([dir, (await fs.stat(dir, { bigint: true })).mtimeNs, statAt]);
          names = await fs.readdir(dir);
        } catch (err) {
          // a folder deleted meanwhile (or no folder) holds nothing; one that cannot be read
          // is no empty one, and a count without it would be written down as the usage
          if (errCode(err) === 'ENOENT' || errCode(err) === 'ENOTDIR') continue;
          throw err;
        }
        for (const n of names) {
          const m = /,S=(\d+)/.exec(n);
          if (m) bytes += Number(m[1]);
          else bytes += (await fs.stat(join(dir, n)).catch(() => ({ size: 0 }))).size;
          messages++;
        }
      }
    }
    return { usage: { bytes, messages }, dirs };
  }
}

/** The hash of per-account storage quota overrides: field = account, value = bytes (0 = unlimited). */
export const QUOTA_OVERRIDES_KEY = 'quota:storage';

/**
 * Storage quota per account: a default from config, overridden per account in Redis
 * (QUOTA_OVERRIDES_KEY).
 */
export class Quotas {
  constructor(
    private readonly redis: Redis | null,
    private readonly defaultBytes: number,
  ) {}

  async limit(account: string): Promise<number> {
    if (this.redis) {
      const v = await this.redis.hget(QUOTA_OVERRIDES_KEY, account.toLowerCase());
      if (v !== null && /^\d+$/.test(v)) return Number(v);
    }
    return this.defaultBytes;
  }

  async set(account: string, bytes: number): Promise<void> {
    await this.redis?.hset(QUOTA_OVERRIDES_KEY, account.toLowerCase(), String(bytes));
  }

  /** Drops the account's override: the default applies again. */
  async clear(account: string): Promise<void> {
    await this.redis?.hdel(QUOTA_OVERRIDES_KEY, account.toLowerCase());
  }

  /** Every account's override, in bytes (0: unlimited). */
  async overrides(): Promise<Record<string, number>> {
    const all = this.redis ? await this.redis.hgetall(QUOTA_OVERRIDES_KEY) : {};
    return Object.fromEntries(
      Object.entries(all).flatMap(([a, v]) => (/^\d+$/.test(v) ? [[a, Number(v)]] : [])),
    );
  }
}
