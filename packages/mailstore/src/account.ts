import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { MailFolder } from './folder.js';
import { accountDir, folderDir } from './maildir.js';
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
    readonly code: 'exists' | 'nonexistent' | 'inbox' | 'invalid',
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

export function validFolderName(name: string): boolean {
  if (!name || name.length > 512) return false;
  const parts = name.split('/');
  return parts.every((p) => p.length > 0 && !/[\x00-\x1f\x7f]/.test(p) && p !== '.' && p !== '..');
}

/** One account's folders: listing, create/rename/delete, subscriptions (Dovecot's `subscriptions` file). */
export class MailAccount {
  private readonly folders = new Map<string, MailFolder>();

  constructor(
    readonly root: string,
    readonly account: string,
    private readonly host?: string,
  ) {}

  get dir(): string {
    return accountDir(this.root, this.account);
  }

  folder(name: string): MailFolder {
    const key = name.toUpperCase() === 'INBOX' ? 'INBOX' : name;
    let f = this.folders.get(key);
    if (!f) {
      f = new MailFolder(folderDir(this.root, this.account, key), key, this.host, this.dir);
      this.folders.set(key, f);
    }
    return f;
  }

  /** INBOX and the special-use folders, created on first use. */
  async ensureDefaults(): Promise<void> {
    await this.folder('INBOX').ensure();
    const subs = await this.subscriptions();
    let changed = false;
    for (const name of Object.keys(SPECIAL_USE)) {
      const f = this.folder(name);
      if (!(await f.exists())) {
        await f.ensure();
        if (!subs.includes(name)) {
          subs.push(name);
          changed = true;
        }
      }
    }
    if (changed) await this.setSubscriptions(subs);
  }

  async list(): Promise<FolderEntry[]> {
    const out: FolderEntry[] = [{ name: 'INBOX', specialUse: null }];
    let names: string[] = [];
    try {
      names = await fs.readdir(this.dir);
    } catch {
      return out;
    }
    for (const d of names.sort()) {
      const name = folderNameFromDir(d);
      if (!name) continue;
      try {
        await fs.access(join(this.dir, d, 'cur'));
      } catch {
        continue;
      }
      out.push({ name, specialUse: SPECIAL_USE[name] ?? null });
    }
    return out;
  }

  async create(name: string): Promise<void> {
    if (name.toUpperCase() === 'INBOX') throw new FolderError('exists', 'INBOX always exists');
    if (!validFolderName(name)) throw new FolderError('invalid', 'invalid folder name');
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
    if (!validFolderName(to)) throw new FolderError('invalid', 'invalid folder name');
    const src = this.folder(from);
    if (!(await src.exists())) throw new FolderError('nonexistent', 'no such folder');
    if (await this.folder(to).exists()) throw new FolderError('exists', 'target folder already exists');
    if (from === 'INBOX') {
      await this.create(to);
      const snap = await src.snapshot();
      await this.folder(to).copyFrom(src, snap.messages);
      await src.expunge(snap.messages.map((m) => m.uid));
      return;
    }
    const all = await this.list();
    const moves = all.filter((f) => f.name === from || f.name.startsWith(from + '/'));
    for (const f of moves) {
      const target = to + f.name.slice(from.length);
      await fs.rename(folderDir(this.root, this.account, f.name), folderDir(this.root, this.account, target));
      this.folders.delete(f.name);
    }
    const subs = await this.subscriptions();
    const renamed = subs.map((s) => (s === from || s.startsWith(from + '/') ? to + s.slice(from.length) : s));
    if (renamed.join('\n') !== subs.join('\n')) await this.setSubscriptions(renamed);
  }

  async subscriptions(): Promise<string[]> {
    try {
      const text = await fs.readFile(join(this.dir, 'subscriptions'), 'utf8');
      const lines = text.split('\n');
      // Dovecot 2.3 writes a "V\t2" header and tab-separated hierarchy
      if (lines[0]?.startsWith('V\t')) {
        return lines
          .slice(2)
          .filter(Boolean)
          .map((l) => l.replace(/\t/g, '/'));
      }
      return lines.filter(Boolean);
    } catch {
      return [];
    }
  }

  async setSubscriptions(names: string[]): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    // unique per call: two sessions of one process may write at once (first logins)
    const tmp = join(this.dir, `subscriptions.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    await fs.writeFile(tmp, [...new Set(names)].map((n) => n + '\n').join(''));
    await fs.rename(tmp, join(this.dir, 'subscriptions'));
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
        } catch {
          continue;
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

/**
 * Storage quota per account: a default from config, overridden per account in Redis
 * (`quota:storage` hash, field = account, value = bytes; 0 = unlimited).
 */
export class Quotas {
  constructor(
    private readonly redis: Redis | null,
    private readonly defaultBytes: number,
  ) {}

  async limit(account: string): Promise<number> {
    if (this.redis) {
      const v = await this.redis.hget('quota:storage', account.toLowerCase());
      if (v !== null && /^\d+$/.test(v)) return Number(v);
    }
    return this.defaultBytes;
  }

  async set(account: string, bytes: number): Promise<void> {
    await this.redis?.hset('quota:storage', account.toLowerCase(), String(bytes));
  }
}
