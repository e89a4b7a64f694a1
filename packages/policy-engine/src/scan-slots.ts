/**
 * Requests in flight to one scanner from this process at most. The policy service's
 * prefetch (64) bounded its scans; an intake asks once per session ending DATA, and a
 * burst of them would overrun clamd's queue (MaxQueue, 100 by default) and fail mail
 * that waiting a moment would have scanned. Past the bound, requests wait their turn.
 */
export const MAX_SCANS_IN_FLIGHT = 64;

const slots = new Map<string, { busy: number; waiting: (() => void)[] }>();

/** Runs `scan` once fewer than MAX_SCANS_IN_FLIGHT requests to `scanner` are in flight. */
export async function withScanSlot<T>(scanner: string, scan: () => Promise<T>): Promise<T> {
  let s = slots.get(scanner);
  if (!s) slots.set(scanner, (s = { busy: 0, waiting: [] }));
  const mine = s;
  if (mine.busy < MAX_SCANS_IN_FLIGHT) mine.busy++;
  else await new Promise<void>((resolve) => mine.waiting.push(resolve));
  try {
    return await scan();
  } finally {
    // the slot passes to the next in line, or is freed
    const next = mine.waiting.shift();
    if (next) next();
    else mine.busy--;
  }
}
