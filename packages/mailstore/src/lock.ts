import * as fsc from 'node:fs';
import type { BigIntStats } from 'node:fs';
import { promisify } from 'node:util';

const EXCLUSIVE = fsc.constants.O_WRONLY | fsc.constants.O_CREAT | fsc.constants.O_EXCL;
const fdatasync = promisify(fsc.fdatasync);

/**
 * `ino:size:mtimeNs` of a file that is replaced by a rename, never written in place: what a
 * reader compares to tell whether it is still the file it read.
 */
export function identOf(st: BigIntStats): string {
  return `${st.ino}:${st.size}:${st.mtimeNs}`;
}

/**
 * Dot-lock as Dovecot takes it on `dovecot-uidlist`: create `<file>.lock` exclusively,
 * write the new content into it, rename it over the file (atomic replace), or unlink
 * it to release without change. A lock older than `staleMs` belongs to a dead process.
 *
 * Every call but the fsync is synchronous: each is a metadata operation of microseconds on
 * a local disk, and a holder that gave the event loop a turn at each one would hold the
 * lock, under load, for as long as every session of the process takes to run once per
 * call (other processes waiting on it all the while). Only the fsync waits in the thread pool.
 */
export class DotLock {
  private constructor(
    readonly path: string,
    private readonly target: string,
    private fd: number | null,
    /** The lock file's inode: whether the file at `path` is still ours (see ours()). */
    private readonly ino: bigint,
  ) {}

  static async acquire(
    target: string,
    opts: { timeoutMs?: number; staleMs?: number } = {},
  ): Promise<DotLock> {
    const path = target + '.lock';
    const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
    const staleMs = opts.staleMs ?? 120_000;
    let wait = 1;
    for (;;) {
      let fd: number | null = null;
      try {
        fd = fsc.openSync(path, EXCLUSIVE, 0o600);
        return new DotLock(path, target, fd, fsc.fstatSync(fd, { bigint: true }).ino);
      } catch (err) {
        if (fd !== null) {
          fsc.closeSync(fd);
          fsc.rmSync(path, { force: true });
        }
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const st = fsc.statSync(path, { bigint: true, throwIfNoEntry: false });
      if (!st) continue;
      if (Date.now() - Number(st.mtimeMs) > staleMs) {
        // another waiter may have broken it and taken the lock since, on the same inode
        // number (a file system reuses a freed one at once): only the file that was stale,
        // the same inode with the same mtime, is removed (as Dovecot compares them first)
        const now = fsc.statSync(path, { bigint: true, throwIfNoEntry: false });
        if (now && now.ino === st.ino && now.mtimeNs === st.mtimeNs) {
          try {
            fsc.unlinkSync(path);
          } catch {
            // taken over by another waiter
          }
        }
        continue;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for lock ${path}`);
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 5);
    }
  }

  /**
   * Replaces the target with `content` and releases the lock; `sync: false` when losing it
   * in a crash is harmless. Returns the new file's `ino:size:mtimeNs`. When the content
   * cannot be written or synced (a full or failing disk), the target stays as it was and
   * the lock is released all the same: left, it would keep every writer out of the file
   * until it went stale. A lock broken as stale meanwhile (a sync that hung for minutes)
   * is another process's now: the target stays as it was, and its lock in place.
   */
  async commit(content: string, opts: { sync?: boolean } = {}): Promise<string> {
    const fd = this.fd;
    if (fd === null) throw new Error('lock already released');
    this.fd = null;
    // the file stays open until the end: while it is, its inode number cannot be another
    // file's, and ours() can be trusted
    try {
      fsc.writeFileSync(fd, content);
      if (opts.sync !== false) await fdatasync(fd);
      const ident = identOf(fsc.fstatSync(fd, { bigint: true }));
      if (!this.ours()) throw new Error(`lock ${this.path} was broken as stale: ${this.target} not replaced`);
      fsc.renameSync(this.path, this.target);
      return ident;
    } catch (err) {
      this.removeIfOurs();
      throw err;
    } finally {
      fsc.closeSync(fd);
    }
  }

  async release(): Promise<void> {
    const fd = this.fd;
    if (fd === null) return;
    this.fd = null;
    try {
      this.removeIfOurs();
    } finally {
      fsc.closeSync(fd);
    }
  }

  /** Whether the lock file at `path` is still the one this lock created (asked while it is open). */
  private ours(): boolean {
    return fsc.statSync(this.path, { bigint: true, throwIfNoEntry: false })?.ino === this.ino;
  }

  /** Removes the lock file unless it is gone or another process's (ours broken as stale). */
  private removeIfOurs(): void {
    if (!this.ours()) return;
    try {
      fsc.unlinkSync(this.path);
    } catch {
      // gone already
    }
  }
}
