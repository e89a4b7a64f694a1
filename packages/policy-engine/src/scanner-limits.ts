// The limits of the scanner clients (clamd.ts, rspamd.ts): connection time and requests in flight.
import type { Socket } from 'node:net';

/**
 * How long a scanner takes to accept a connection at most. A scanner on the same host
 * or network accepts within milliseconds; under load, a full accept queue drops a
 * connection attempt, which the kernel repeats after 1 s and 3 s. Past this, packets to
 * it are dropped (a firewall): the connection is treated as refused.
 */
export const SCANNER_CONNECT_TIMEOUT_MS = 5000;

/** The error of a connection not made within SCANNER_CONNECT_TIMEOUT_MS (code ETIMEDOUT, as the kernel's). */
export function connectTimedOut(scanner: string, ms: number): Error {
  return Object.assign(new Error(`${scanner}: no connection within ${ms} ms`), { code: 'ETIMEDOUT' });
}

/**
 * Fails a connection still being made after SCANNER_CONNECT_TIMEOUT_MS (or `timeoutMs`,
 * the request's whole deadline, when shorter) with connectTimedOut.
 */
export function connectWithin(
  sock: Socket,
  timeoutMs: number,
  scanner: string,
  fail: (err: Error) => void,
): void {
  if (!sock.connecting) return;
  const ms = Math.min(timeoutMs, SCANNER_CONNECT_TIMEOUT_MS);
  const timer = setTimeout(() => fail(connectTimedOut(scanner, ms)), ms);
  const clear = () => clearTimeout(timer);
  sock.once('connect', clear);
  sock.once('close', clear);
}

/**
 * Requests in flight to one scanner from this process at most. The policy service's
 * prefetch (64) bounded its scans; an intake asks once per session ending DATA, and a
 * burst of them would pile up in clamd's queue (MaxQueue, 100 by default) and fail mail
 * that waiting a moment would have scanned. Past the bound, requests wait their turn,
 * within their own deadline: one whose deadline passes while it waits fails as a scan
 * that did not answer in time.
 */
export const MAX_SCANS_IN_FLIGHT = 64;

const slots = new Map<string, { busy: number; waiting: (() => void)[] }>();

/**
 * Runs `scan` with the time left of `timeoutMs` once fewer than MAX_SCANS_IN_FLIGHT
 * requests to `scanner` are in flight; `late` is the error when none frees in time.
 * `signal` (the session stopped waiting for the decision) ends a wait for a slot at once
 * with its reason, and goes on to `scan`, which ends its request with it.
 */
export async function withScanSlot<T>(
  scanner: string,
  timeoutMs: number,
  late: () => Error,
  scan: (leftMs: number) => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  signal?.throwIfAborted();
  const started = Date.now();
  let s = slots.get(scanner);
  if (!s) slots.set(scanner, (s = { busy: 0, waiting: [] }));
  const mine = s;
  if (mine.busy < MAX_SCANS_IN_FLIGHT) mine.busy++;
  else
    await new Promise<void>((resolve, reject) => {
      const leave = (err: Error) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', aborted);
        mine.waiting.splice(mine.waiting.indexOf(turn), 1);
        reject(err);
      };
      const turn = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', aborted);
        resolve();
      };
      const aborted = () => leave(signal!.reason as Error);
      const timer = setTimeout(() => leave(late()), timeoutMs);
      mine.waiting.push(turn);
      signal?.addEventListener('abort', aborted, { once: true });
    });
  try {
    return await scan(Math.max(1, timeoutMs - (Date.now() - started)));
  } finally {
    // the slot passes to the next in line, or is freed
    const next = mine.waiting.shift();
    if (next) next();
    else mine.busy--;
  }
}
