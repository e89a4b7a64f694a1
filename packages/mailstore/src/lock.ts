import { constants, promises as fs, type BigIntStats } from 'node:fs';

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
 */
export class DotLock {
  private constructor(
    readonly path: string,
    private readonly target: string,
    private fh: fs.FileHandle | null,
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
      try {
        const fh = await fs.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
        return new DotLock(path, target, fh);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      try {
        const st = await fs.stat(path);
        if (Date.now() - st.mtimeMs > staleMs) {
          await fs.unlink(path).catch(() => undefined);
          continue;
        }
      } catch {
        continue;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for lock ${path}`);
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 5);
    }
  }

  /**
   * Replaces the target with `content` and releases the lock; `sync: false` when losing it
   * in a crash is harmless. Returns the new file's `ino:size:mtimeNs`.
   */
  async commit(content: string, opts: { sync?: boolean } = {}): Promise<string> {
    const fh = this.fh;
    if (!fh) throw new Error('lock already released');
    this.fh = null;
    let ident: string;
    try {
      await fh.writeFile(content);
      if (opts.sync !== false) await fh.sync();
      ident = identOf(await fh.stat({ bigint: true }));
    } finally {
      await fh.close();
    }
    await fs.rename(this.path, this.target);
    return ident;
  }

  async release(): Promise<void> {
    const fh = this.fh;
    if (!fh) return;
    this.fh = null;
    await fh.close();
    await fs.unlink(this.path).catch(() => undefined);
  }
}
