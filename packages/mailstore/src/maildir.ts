import { createHash, randomBytes } from 'node:crypto';
import * as fsc from 'node:fs';
import { constants, promises as fs } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { recordUsage } from './maildirsize.js';

/**
 * Maildir++ store, write side. Layout under the configured root:
 *
 *   <root>/<domain>/<local-part>/           INBOX (cur/ new/ tmp/)
 *   <root>/<domain>/<local-part>/.Junk/     other folders, Maildir++ style
 *
 * the layout Dovecot reads with `mail_location = maildir:<root>/%d/%n`.
 */
export interface MaildirStoreOptions {
  root: string;
  /** Goes into file names (the "host" part of a Maildir unique name). */
  hostname: string;
}

/** Encodes one path component so nothing a client chose can walk the file tree. */
export function safeComponent(text: string): string {
  // dots stay (domains and dotted local parts read as they are, as Dovecot's %d/%n expect);
  // only a leading dot is encoded, so no component is "." or ".." or a hidden file
  const enc = text.replace(/[^A-Za-z0-9.!#$&'*+=?^_`{|}~@-]|^\.|%/g, (c) =>
    [...Buffer.from(c)].map((b) => '%' + b.toString(16).padStart(2, '0')).join(''),
  );
  return enc || '%00';
}

export function accountDir(root: string, account: string): string {
  const at = account.lastIndexOf('@');
  return join(root, safeComponent(account.slice(at + 1)), safeComponent(account.slice(0, at)));
}

/** Maildir++ directory name of a folder other than INBOX: `Work/Projects` is `.Work.Projects`. */
export function folderDirName(folder: string): string {
  const name = folder
    .split('/')
    .map((p) => p.replace(/[%./]/g, (c) => '%' + c.charCodeAt(0).toString(16)))
    .join('.');
  return '.' + name;
}

/** Maildir++ folder directory: INBOX is the account root, every other folder one directory in it. */
export function folderDir(root: string, account: string, folder: string): string {
  const base = accountDir(root, account);
  if (folder.toUpperCase() === 'INBOX') return base;
  return join(base, folderDirName(folder));
}

export interface DeliverRequest {
  account: string;
  folder: string;
  /** The complete file content, trace headers included. */
  data: Buffer;
  /** Identifies this copy: the same key always yields the same file name (idempotent redelivery). */
  queueId: string;
  recipient: string;
  receivedAt: Date;
  /**
   * A run before this one may have written the copy: it is looked for in cur/ too, where
   * a mail client may have moved it since (`<name>:2,<flags>`). Costs a listing of cur/,
   * so only a rerun asks for it.
   */
  rerun?: boolean;
}

export interface DeliverResult {
  path: string;
  /** False when an earlier delivery of the same copy was found: nothing was written. */
  written: boolean;
  /** The folder did not exist and was created for this copy (a first Junk, a deleted one). */
  createdFolder: boolean;
}

/**
 * Errors of the file system under the store as a whole that say nothing about the message
 * or the account: a full disk, an I/O error, a read-only remount, no descriptors left.
 * EDQUOT is one of them: every mailbox is owned by the one user delivery runs as, so a
 * file-system quota is the whole store's. As for Postfix's local(8) and Dovecot's LDA
 * (EX_TEMPFAIL), the mail waits until they are fixed instead of counting as a failed
 * attempt. Errors about one path (EACCES or EPERM on a maildir restored with the wrong
 * owner, EBUSY, EAGAIN, ENOTDIR) are not here: held in place, such messages would never
 * leave, fill the consumer's prefetch and stop every other account's mail; delivery
 * defers that account's recipient instead and retries it on its schedule.
 */
const STORAGE_FAULTS = new Set(['ENOSPC', 'EDQUOT', 'EIO', 'EROFS', 'EMFILE', 'ENFILE', 'ESTALE']);

/** True for an error of the store's file system (see STORAGE_FAULTS), not of the message. */
export function isStorageFault(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' && STORAGE_FAULTS.has(code);
}

export class MaildirStore {
  private readonly ready = new Set<string>();
  private readonly dirSync = new Map<string, { running: Promise<void> | null; next: Promise<void> | null }>();

  constructor(private readonly opts: MaildirStoreOptions) {}

  get root(): string {
    return this.opts.root;
  }

  async ensureFolder(account: string, folder: string): Promise<string> {
    return (await this.makeFolder(account, folder)).dir;
  }

  /** The folder's directory, and whether it had to be created. */
  private async makeFolder(account: string, folder: string): Promise<{ dir: string; created: boolean }> {
    const dir = folderDir(this.opts.root, account, folder);
    if (this.ready.has(dir)) return { dir, created: false };
    const created = !(await exists(join(dir, 'cur')));
    await Promise.all(
      ['tmp', 'new', 'cur'].map((d) => fs.mkdir(join(dir, d), { recursive: true, mode: 0o700 })),
    );
    if (folder.toUpperCase() !== 'INBOX') await fs.writeFile(join(dir, 'maildirfolder'), '', { flag: 'a' });
    this.ready.add(dir);
    return { dir, created };
  }

  /** Deterministic Maildir name for one copy of one queued message. */
  fileName(req: DeliverRequest): string {
    const rcpt = createHash('sha256').update(req.recipient.toLowerCase()).digest('hex').slice(0, 12);
    const sec = Math.floor(req.receivedAt.getTime() / 1000);
    const host = this.opts.hostname.replace(/[/:]/g, '_');
    return `${sec}.Q${req.queueId}R${rcpt}.${host},S=${req.data.length}`;
  }

  /**
   * Where an earlier run filed this copy: new/, or cur/ once a mail client moved it there.
   * Null when it is in neither (nor is its folder).
   */
  async findCopy(req: DeliverRequest): Promise<string | null> {
    const dir = folderDir(this.opts.root, req.account, req.folder);
    const name = this.fileName(req);
    if (await exists(join(dir, 'new', name))) return join(dir, 'new', name);
    return movedToCur(dir, name);
  }

  /**
   * Writes tmp/ -> fsync -> rename into new/ -> fsync new/. Returns once the message
   * survives a crash. A copy already in new/ under the same name (or, on a rerun, in cur/
   * under that base name) is not written again.
   */
  async deliver(req: DeliverRequest): Promise<DeliverResult> {
    let { dir, created: createdFolder } = await this.makeFolder(req.account, req.folder);
    const name = this.fileName(req);
    const finalPath = () => join(dir, 'new', name);
    if (await exists(finalPath())) return { path: finalPath(), written: false, createdFolder };
    if (req.rerun) {
      const seen = await movedToCur(dir, name);
      if (seen) return { path: seen, written: false, createdFolder };
    }
    try {
      await place(dir, name, req.data);
    } catch (err) {
      // the folder, or a part of it, is gone since we made it: a user removed Junk over
      // IMAP, an operator restored a maildir from a backup that keeps no empty directory
      // (its new/ gone, tmp/ kept for a file left in it). Made again, rather than fail
      // every delivery to it until the process restarts
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      this.ready.delete(dir);
      ({ dir, created: createdFolder } = await this.makeFolder(req.account, req.folder));
      await place(dir, name, req.data);
    }
    // counted as soon as it is there: a redelivery after a failed sync finds the file and
    // would not count it
    recordUsage(accountDir(this.opts.root, req.account), req.data.length, 1);
    await this.syncDir(join(dir, 'new'));
    return { path: finalPath(), written: true, createdFolder };
  }

  /**
   * fsync of a directory with group commit: while one sync runs, every later caller
   * shares the single sync that starts after it (which covers all their renames).
   */
  private syncDir(dir: string): Promise<void> {
    let s = this.dirSync.get(dir);
    if (!s) {
      s = { running: null, next: null };
      this.dirSync.set(dir, s);
    }
    const state = s;
    const start = (): Promise<void> => {
      const p = fsyncPath(dir).finally(() => {
        if (state.running === p) state.running = null;
      });
      state.running = p;
      return p;
    };
    if (!state.running) return start();
    state.next ??= state.running
      .catch(() => undefined)
      .then(() => {
        state.next = null;
        return start();
      });
    return state.next;
  }
}

/**
 * Writes `data` into tmp/ of the maildir `dir`, fsyncs it and renames it into new/ as
 * `name`. A part written is removed when any step fails.
 */
async function place(dir: string, name: string, data: Buffer): Promise<void> {
  // one file per attempt: two overlapping runs of the same copy never write into one
  const tmpPath = join(dir, 'tmp', `${name}.${process.pid}.${randomBytes(4).toString('hex')}`);
  // the callback API: a third less CPU per file than FileHandle promises
  const fd = await cb.open(tmpPath, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
  try {
    try {
      for (let off = 0; off < data.length;) off += await cb.write(fd, data, off);
      await cb.fsync(fd);
    } finally {
      await cb.close(fd);
    }
    await cb.rename(tmpPath, join(dir, 'new', name));
  } catch (err) {
    // a part written to a full disk would hold its blocks until tmp/ is cleaned
    await cb.unlink(tmpPath).catch(() => undefined);
    throw err;
  }
}

const cb = {
  open: promisify(fsc.open),
  write: (fd: number, data: Buffer, offset: number) =>
    new Promise<number>((resolve, reject) =>
      fsc.write(fd, data, offset, data.length - offset, null, (err, n) => (err ? reject(err) : resolve(n))),
    ),
  fsync: promisify(fsc.fsync),
  close: promisify(fsc.close),
  rename: promisify(fsc.rename),
  unlink: promisify(fsc.unlink),
};

async function fsyncPath(path: string): Promise<void> {
  const fd = await cb.open(path, constants.O_RDONLY);
  try {
    await cb.fsync(fd);
  } finally {
    await cb.close(fd);
  }
}

/** The copy `name` once a mail client moved it from new/ into cur/ (`<name>:2,<flags>`). */
async function movedToCur(dir: string, name: string): Promise<string | null> {
  let names: string[];
  try {
    names = await fs.readdir(join(dir, 'cur'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const found = names.find((n) => n === name || n.startsWith(name + ':'));
  return found ? join(dir, 'cur', found) : null;
}

function exists(path: string): Promise<boolean> {
  return new Promise((resolve) => fsc.access(path, (err) => resolve(!err)));
}
