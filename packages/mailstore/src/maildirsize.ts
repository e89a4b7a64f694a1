import * as fsc from 'node:fs';
import { constants, promises as fs } from 'node:fs';
import { join } from 'node:path';

/**
 * The Maildir++ quota file, `maildirsize` in the account's root, as Courier and Dovecot's
 * maildir quota backend keep it: the first line is the limit (`<bytes>S`), every further
 * line one change, `<bytes> <messages>` (negative for removals), appended with O_APPEND.
 * Reading the usage is then one small file instead of a walk over every message of the
 * account. The file is rebuilt from the folders when it is missing, names another limit,
 * does not parse, grows past 5120 bytes, or says "over quota" and is older than 15
 * minutes (the rules of the Maildir++ specification), so changes made behind our back
 * (a file removed by hand) are corrected. A file grown past 5120 bytes is rebuilt in the
 * background, its sum answering meanwhile: the walk over every folder would otherwise hold
 * up the command that found it too long, and under steady changes that is every few
 * hundred of them.
 */
export const MAILDIRSIZE = 'maildirsize';
const RECALC_SIZE = 5120;
/** Past this size the file is neither read nor appended to: the next read rebuilds it, and waits. */
const MAX_SIZE = 64 * 1024;
const RECALC_AGE_MS = 15 * 60_000;

export interface Usage {
  bytes: number;
  messages: number;
}

/**
 * Records a change in the account's quota file, if it has one (only an account with a
 * limit has): one `write` with O_APPEND, so concurrent writers never interleave. Blocking
 * calls on purpose: a missing file (no quota) is one failed open of a cached directory
 * entry, and an append lands in the page cache; both take microseconds, less than a
 * round trip through the thread pool.
 */
export function recordUsage(accountDir: string, bytes: number, messages: number): void {
  if (!bytes && !messages) return;
  const path = join(accountDir, MAILDIRSIZE);
  // the change is already made and must never be reported as failed: whatever goes
  // wrong here, the file goes and the next read counts again
  try {
    const fd = fsc.openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW);
    try {
      // a file this long is not read: drop it rather than let it grow (a quota that was
      // removed leaves a file nobody reads, and nobody rebuilds)
      if (fsc.fstatSync(fd).size > MAX_SIZE) throw new Error('rebuilt on the next read');
      fsc.writeSync(fd, `${bytes} ${messages}\n`);
    } catch {
      fsc.rmSync(path, { force: true });
    } finally {
      fsc.closeSync(fd);
    }
  } catch {
    // no quota file (ENOENT: no quota), or one we cannot use: nothing to keep up to date
  }
}

/** Drops the quota file, so the next read counts the folders again. */
export async function forgetUsage(accountDir: string): Promise<void> {
  await fs.rm(join(accountDir, MAILDIRSIZE), { force: true });
}

/** Parses a quota file for `limit`; null when it must be rebuilt. */
export function parseMaildirSize(text: string, limit: number): Usage | null {
  const lines = text.split('\n');
  if (lines.pop() !== '') return null; // a torn last line
  // `<bytes>S`, with a message limit (`,<n>C`) as Dovecot may write it (not enforced here)
  const def = /^(\d+)S(?:,\d+C)?$/.exec(lines[0] ?? '');
  if (!def || Number(def[1]) !== limit) return null;
  let bytes = 0;
  let messages = 0;
  for (let i = 1; i < lines.length; i++) {
    const m = /^\s*(-?\d+)\s+(-?\d+)\s*$/.exec(lines[i]!);
    if (!m) return null;
    bytes += Number(m[1]);
    messages += Number(m[2]);
  }
  if (bytes < 0 || messages < 0 || !Number.isSafeInteger(bytes)) return null;
  return { bytes, messages };
}

/** A count of the folders, with each directory's modification time and when that was read, before it was read. */
export interface Counted {
  usage: Usage;
  dirs: [path: string, mtimeNs: bigint, statAtNs: bigint][];
}

/**
 * A directory time this close to when it was read may be followed by another change in
 * the same clock tick, which would leave it unchanged: the kernel's coarse clock ticks
 * every few ms, and a file system that keeps whole seconds ticks every second (the same
 * rule as MailFolder's signature).
 */
const TICK_NS = 50_000_000n;
const TICK_WHOLE_SECONDS_NS = 2_000_000_000n;
const COUNT_TRIES = 3;

/**
 * The account's usage from its quota file, rebuilt with `count` (a walk over the
 * folders) when the file cannot be trusted. A count during which a directory changed (a
 * delivery, an expunge) is done again, as Dovecot does: the file would otherwise keep a
 * figure that misses that change until its next rebuild.
 */
export async function readUsage(
  accountDir: string,
  limit: number,
  count: () => Promise<Counted>,
): Promise<Usage> {
  const path = join(accountDir, MAILDIRSIZE);
  let text: string | null = null;
  let st: fsc.Stats | null = null;
  try {
    // blocking calls, as in recordUsage: a file of a few KiB in the page cache is read
    // in microseconds, where four trips through the thread pool cost more
    const fd = fsc.openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      st = fsc.fstatSync(fd);
      if (st.isFile() && st.size <= MAX_SIZE) text = fsc.readFileSync(fd).toString('latin1');
    } finally {
      fsc.closeSync(fd);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'ELOOP')
      throw err;
  }
  const parsed = text === null ? null : parseMaildirSize(text, limit);
  const stale = parsed && parsed.bytes > limit && Date.now() - st!.mtimeMs > RECALC_AGE_MS;
  if (parsed && !stale) {
    if (st!.size > RECALC_SIZE && st!.size >= (retryAt.get(accountDir) ?? 0))
      void rebuild(accountDir, limit, count, true).catch(() => undefined);
    return parsed;
  }
  return rebuild(accountDir, limit, count, false);
}

/** Rebuilds under way, by account directory: the readers of one account share its walk. */
const rebuilding = new Map<string, Promise<Usage>>();
/**
 * After a background rebuild left the file (a change raced it), the size at which the
 * next one is tried: a few dozen changes later, not at every read of a busy account.
 */
const retryAt = new Map<string, number>();
const RETRY_GROWTH = 512;

/** `background`: the file answers right meanwhile, and is replaced only by a count it cannot have missed. */
function rebuild(
  accountDir: string,
  limit: number,
  count: () => Promise<Counted>,
  background: boolean,
): Promise<Usage> {
  let p = rebuilding.get(accountDir);
  if (!p) {
    p = countAndWrite(accountDir, limit, count, background).finally(() => rebuilding.delete(accountDir));
    rebuilding.set(accountDir, p);
  }
  return p;
}

async function countAndWrite(
  accountDir: string,
  limit: number,
  count: () => Promise<Counted>,
  background: boolean,
): Promise<Usage> {
  const path = join(accountDir, MAILDIRSIZE);
  // a count during which a directory changed is done again
  let counted = await count();
  let ended = fileAt(path);
  for (let i = 1; i < COUNT_TRIES && !(await unchangedSince(counted.dirs)); i++) {
    counted = await count();
    ended = fileAt(path);
  }
  const { usage } = counted;
  // A line appended since the count ended may be a change it missed (made after its last
  // look at a folder) or one it saw (a change writes its line once its syncs are done):
  // which, the line cannot tell. In the background the file, right with every line, is
  // then kept, and a later read tries again; removing the rebuilt file instead, as the
  // specification suggests, made the next reader wait for a walk. A count that readers
  // wait for is written whatever happened, since under steady changes none may be quiet:
  // its error is bounded by the few changes that raced it, and the file is rebuilt once it
  // grows. The last look and the rename are one synchronous step.
  const now = fileAt(path);
  if (background && !sameFile(now, ended)) {
    if (now) retryAt.set(accountDir, now.size + RETRY_GROWTH);
    return usage;
  }
  retryAt.delete(accountDir);
  const tmp = join(
    accountDir,
    'tmp',
    `${MAILDIRSIZE}.${process.pid}.${Date.now()}.${Math.random().toString(36).slice(2)}`,
  );
  try {
    fsc.writeFileSync(tmp, `${limit}S\n${usage.bytes} ${usage.messages}\n`, { mode: 0o600 });
    fsc.renameSync(tmp, path);
  } catch {
    // the count stands; the file is written by a later read (a full disk, say)
    fsc.rmSync(tmp, { force: true });
  }
  return usage;
}

/** The quota file's inode and size now; null when there is none, or it cannot be seen. */
function fileAt(path: string): { ino: number; size: number } | null {
  try {
    const st = fsc.lstatSync(path, { throwIfNoEntry: false });
    return st?.isFile() ? { ino: st.ino, size: st.size } : null;
  } catch {
    return null;
  }
}

function sameFile(a: { ino: number; size: number } | null, b: { ino: number; size: number } | null): boolean {
  return !!a && !!b && a.ino === b.ino && a.size === b.size;
}

/** The directories still have the times the count saw, and none was too fresh to trust. */
async function unchangedSince(dirs: Counted['dirs']): Promise<boolean> {
  for (const [dir, before, statAt] of dirs) {
    const whole = before % 1_000_000_000n === 0n;
    if (statAt - before < (whole ? TICK_WHOLE_SECONDS_NS : TICK_NS)) return false;
    const st = await fs.stat(dir, { bigint: true }).catch(() => null);
    if (!st || st.mtimeNs !== before) return false;
  }
  return true;
}
