import { promises as fs } from 'node:fs';
import { Readable } from 'node:stream';
import { basename, join } from 'node:path';
import { DotLock } from './lock.js';
import { UIDLIST } from './folder.js';

/** One file of the store as a copy sees it, with its path relative to the root (`/`-separated). */
export interface StoreFile {
  rel: string;
  size: number;
  /** The message's INTERNALDATE is its file's mtime: a copy must keep it. */
  mtimeMs: number;
  mode: number;
  /**
   * Opens it: its size when opened and that many bytes of content (a message file's never
   * changes, only its name; `maildirsize` may grow meanwhile). Null: it is gone.
   */
  open(): Promise<{ size: number; stream: Readable } | null>;
}

/** A folder (its `cur/`, `new/` and `tmp/`), given before its files: an empty one is kept too. */
export interface StoreFolder {
  /** The folder's directory relative to the root: `<domain>/<local>` (INBOX) or `<domain>/<local>/.Name`. */
  folder: string;
}

export interface StoreWalkStats {
  accounts: number;
  folders: number;
  messages: number;
  bytes: number;
}

/**
 * Files no copy keeps: lock files and half-written replacements (a crash's leftovers),
 * and the header cache, which is rebuilt from the messages (README, "mailyard.index.cache").
 */
function transient(name: string): boolean {
  return name.endsWith('.lock') || name.endsWith('.tmp') || name === 'mailyard.index.cache';
}

/** How often a held lock is touched, well within the two minutes after which others break it. */
const LOCK_REFRESH_MS = 30_000;

async function dirs(path: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(path, { withFileTypes: true })) if (e.isDirectory()) out.push(e.name);
  return out.sort();
}

/** A file as listed, with where it was. */
interface ListedFile extends StoreFile {
  path: string;
}

/** Regular files of a directory, skipping what vanished between the listing and the stat. */
async function files(dir: string, rel: string): Promise<ListedFile[]> {
  let names: string[];
  try {
    names = (await fs.readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: ListedFile[] = [];
  for (const name of names) {
    if (transient(name)) continue;
    const path = join(dir, name);
    let st;
    try {
      st = await fs.lstat(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    if (!st.isFile()) continue;
    out.push({
      path,
      rel: rel ? `${rel}/${name}` : name,
      size: st.size,
      mtimeMs: st.mtimeMs,
      mode: st.mode & 0o777,
      open: () => openFile(path),
    });
  }
  return out;
}

async function openFile(path: string): Promise<{ size: number; stream: Readable } | null> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const { size } = await fh.stat();
  if (size) return { size, stream: fh.createReadStream({ start: 0, end: size - 1, autoClose: true }) };
  // an empty range would read to the end
  await fh.close();
  return { size, stream: Readable.from([]) };
}

/** The file with its content as it is now (a folder's state files, read under its lock). */
async function inMemory(f: ListedFile): Promise<StoreFile> {
  let data: Buffer;
  try {
    data = await fs.readFile(f.path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return { rel: f.rel, size: 0, mtimeMs: f.mtimeMs, mode: f.mode, open: () => Promise.resolve(null) };
  }
  return {
    rel: f.rel,
    size: data.length,
    mtimeMs: f.mtimeMs,
    mode: f.mode,
    open: () => Promise.resolve({ size: data.length, stream: Readable.from([data]) }),
  };
}

/**
 * Opens message files listed under the folder lock after it was let go: a file renamed
 * since (its flags changed, or moved from new/ to cur/) is found under its new name by
 * its base, which never changes, and has the same content. One expunged since is gone.
 */
function messagesOf(dir: string): (f: ListedFile) => StoreFile {
  let now: Promise<Map<string, string>> | null = null;
  const base = (name: string) => name.split(':')[0]!;
  const relisted = () =>
    (now ??= (async () => {
      const out = new Map<string, string>();
      for (const sub of ['new', 'cur'])
        for (const name of await fs.readdir(join(dir, sub)).catch(() => [] as string[]))
          out.set(base(name), join(dir, sub, name));
      return out;
    })());
  return (f) => ({
    rel: f.rel,
    size: f.size,
    mtimeMs: f.mtimeMs,
    mode: f.mode,
    open: async () => {
      const opened = await f.open();
      if (opened) return opened;
      const moved = (await relisted()).get(base(basename(f.path)));
      return moved ? openFile(moved) : null;
    },
  });
}

/**
 * Runs `fn` while holding the lock that guards `target` (`dovecot-uidlist` of a folder,
 * `subscriptions` of an account), changing nothing: the lock file is removed after. The
 * lock is touched while held, so a long copy is not taken for a dead holder's.
 */
async function holding<T>(target: string, fn: () => Promise<T>): Promise<T> {
  const lock = await DotLock.acquire(target);
  const refresh = setInterval(() => {
    const now = new Date();
    fs.utimes(lock.path, now, now).catch(() => undefined);
  }, LOCK_REFRESH_MS);
  try {
    return await fn();
  } finally {
    clearInterval(refresh);
    await lock.release();
  }
}

/**
 * Hands every file of the store under `root` to `visit`, one at a time. Each folder is
 * listed, and its state files (UIDs, MODSEQ, keywords) read, while its
 * `dovecot-uidlist.lock` is held: no session or Dovecot changes flags, expunges or writes
 * the UID list meanwhile, so the message names (their flags) and the state are of one
 * moment. The lock is let go before the messages are copied, which may take long: their
 * content never changes, and one renamed since is found by its base name (see messagesOf);
 * one expunged since is left out. Deliveries do not take the lock and only add files to
 * `new/`: a message delivered meanwhile is in the copy or not, and either way numbered by
 * the next reader. Files in `tmp/` are not complete messages and are left out.
 *
 * Folders are created, renamed and deleted without a lock (as in Dovecot's Maildir), so a
 * folder renamed while the walk runs may be copied under either name or not at all.
 */
export async function walkStore(
  root: string,
  visit: (item: StoreFile | StoreFolder) => Promise<void>,
): Promise<StoreWalkStats> {
  const stats: StoreWalkStats = { accounts: 0, folders: 0, messages: 0, bytes: 0 };
  let domains: string[];
  try {
    domains = await dirs(root);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return stats;
    throw err;
  }
  for (const domain of domains) {
    for (const local of await dirs(join(root, domain))) {
      const accountRel = `${domain}/${local}`;
      const accountPath = join(root, domain, local);
      stats.accounts++;
      // INBOX is the account's directory, and the other folders are directories in it
      const folderNames = ['', ...(await dirs(accountPath)).filter((d) => d.startsWith('.'))];
      for (const folder of folderNames) {
        const dir = folder ? join(accountPath, folder) : accountPath;
        const rel = folder ? `${accountRel}/${folder}` : accountRel;
        // a directory without cur/ is no folder (a rename or delete under way)
        const exists = await fs.stat(join(dir, 'cur')).then(
          (s) => s.isDirectory(),
          () => false,
        );
        if (!exists) continue;
        stats.folders++;
        const { state, listed } = await holding(join(dir, UIDLIST), async () => {
          // the state files first, then the listings: all of them of the same moment
          const state = await Promise.all(
            (await files(dir, rel))
              .filter((f) => folder || f.rel.split('/').pop() !== 'subscriptions')
              .map(inMemory),
          );
          const cur = await files(join(dir, 'cur'), `${rel}/cur`);
          const fresh = await files(join(dir, 'new'), `${rel}/new`);
          return { state, listed: [...cur, ...fresh] };
        });
        await visit({ folder: rel });
        for (const f of state) await visit(f);
        const message = messagesOf(dir);
        for (const f of listed) {
          await visit(message(f));
          stats.messages++;
          stats.bytes += f.size;
        }
      }
      // the subscriptions under their own lock, as the account changes them
      await holding(join(accountPath, 'subscriptions'), async () => {
        for (const f of await files(accountPath, accountRel))
          if (f.rel.endsWith('/subscriptions')) await visit(f);
      });
    }
  }
  return stats;
}
