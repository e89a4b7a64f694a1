import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { Claims } from './claims.js';

/**
 * One reader of the delay queues at a time, across every process with the same Redis
 * (CLIs, the admin API). A scan holds each message it has taken (basic.get, unacked)
 * until its channel closes, so a second scan running at once sees none of them: its
 * list would come out short, and it would drop their index entries as gone, or answer
 * "no deferred message" to a delete or retry. A lease rather than a plain lock: a
 * reader that dies lets go of it by expiry, and a scan that finds it has lost its
 * lease (it stalled past LEASE_MS) does not trust what it did not see.
 */

export const SCAN_LEASE_KEY = 'outbound:deferred:scan';
/** The same for the dead-letter queue (./dead-letters.ts), which is read apart. */
export const DEAD_LETTER_SCAN_LEASE_KEY = 'dead-letter:scan';

/** How long a lease lasts unless renewed; renewed at a third of it while the scan runs. */
const LEASE_MS = 30_000;
/** How long a caller waits for another's scan to end before giving up. */
const WAIT_MS = 60_000;
const POLL_MS = 50;

export interface ScanLease {
  /** Whether the lease was held without a break since it was taken (renewing it once more). */
  held(): Promise<boolean>;
}

/**
 * Runs `fn` holding the scan lease (`key`: the delay queues' by default); waits up to
 * `waitMs` (WAIT_MS) for another holder, then fails with `busy()`'s error.
 */
export async function withScanLease<T>(
  redis: Redis,
  busy: () => Error,
  fn: (lease: ScanLease) => Promise<T>,
  waitMs = WAIT_MS,
  key = SCAN_LEASE_KEY,
): Promise<T> {
  const claims = new Claims(redis, LEASE_MS);
  const token = randomBytes(8).toString('hex');
  const deadline = Date.now() + waitMs;
  while ((await claims.take(token, [key]))[0] !== 'taken') {
    if (Date.now() >= deadline) throw busy();
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  let lost = false;
  const renew = async () => {
    if (lost) return;
    try {
      lost = !(await claims.renew(token, [key]))[0];
    } catch {
      lost = true;
    }
  };
  const timer = setInterval(() => void renew(), LEASE_MS / 3);
  try {
    return await fn({
      held: async () => {
        await renew();
        return !lost;
      },
    });
  } finally {
    clearInterval(timer);
    await claims.release(token, [key]).catch(() => undefined);
  }
}
