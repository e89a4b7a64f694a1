import type { Redis } from 'ioredis';
import { withScanLease } from '@mailyard/queue-admin/scan-lease';

/**
 * The steps of `user del` that follow the removal of the account's record, named as a
 * warning names them. Each may fail on its own (Redis trouble) once the account is gone.
 */
export const CLEANUP_STEPS = {
  sessions: 'its webmail sessions were not ended',
  revocation: 'its logins on other protocols were not told to end',
  audit: 'the deletion is not in the audit log',
  quota: 'its quota override was not removed',
  loginGuard: 'its failed-login counts were not cleared',
  patternKeys: 'its out-of-office reply markers were not removed',
} as const;
export type CleanupStep = keyof typeof CLEANUP_STEPS;

/**
 * HASH: account → JSON array of the CleanupStep names still to do (renaming it is a
 * migration). Written before the record goes and emptied when every step has run, so a
 * failed clean-up is known after the account is: `user del` again finishes it, where it
 * would otherwise answer that there is no such account.
 */
export const CLEANUP_PENDING_KEY = 'admin:account-cleanup';

export async function pendingCleanup(redis: Redis, account: string): Promise<CleanupStep[] | null> {
  const raw = await redis.hget(CLEANUP_PENDING_KEY, account);
  if (raw === null) return null;
  try {
    const steps = JSON.parse(raw) as unknown;
    if (Array.isArray(steps)) return steps.filter((s): s is CleanupStep => s in CLEANUP_STEPS);
  } catch {
    // unreadable: every step again, each is safe to repeat
  }
  return Object.keys(CLEANUP_STEPS) as CleanupStep[];
}

/**
 * Runs when Redis is at its maxmemory (allow-oom): one short field per account being
 * deleted, and a deletion, which shuts the account out, must not wait for room.
 */
const SET_PENDING = `#!lua flags=allow-oom
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])`;

export async function setPendingCleanup(redis: Redis, account: string, steps: readonly CleanupStep[]) {
  if (steps.length) await redis.eval(SET_PENDING, 1, CLEANUP_PENDING_KEY, account, JSON.stringify(steps));
  else await redis.hdel(CLEANUP_PENDING_KEY, account);
}

/**
 * STRING `admin:account-deleting:<account>`, a lease held while a deletion runs: a second
 * deletion of the account at the same time (two admins, a double click) would find its
 * clean-up pending and run it again, audited again. The lease is renewed while the
 * deletion runs (its clean-up scans the whole keyspace, which may take long) and only its
 * holder lets go of it; a process that died holding it blocks no deletion for long.
 */
const deletingKey = (account: string) => `admin:account-deleting:${account}`;

/** Runs `fn` as the one deletion of `account` now; null, without running it, while another runs. */
export async function asOnlyDeletion<T>(
  redis: Redis,
  account: string,
  fn: () => Promise<T>,
): Promise<T | null> {
  const busy = new Error(`a deletion of ${account} runs already`);
  try {
    return await withScanLease(redis, () => busy, fn, 0, deletingKey(account));
  } catch (err) {
    if (err === busy) return null;
    throw err;
  }
}

/** The warning for steps left undone: one sentence, with what to run. */
export function cleanupWarning(account: string, left: readonly CleanupStep[], cause: string): string {
  const parts = left.map((s) => CLEANUP_STEPS[s]);
  const list = parts.length > 1 ? `${parts.slice(0, -1).join(', ')} and ${parts.at(-1)}` : parts[0];
  return `account ${account} is deleted, but ${list} (${cause}); deleting it again finishes the clean-up`;
}
