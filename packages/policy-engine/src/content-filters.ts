import type { PolicyReplies } from '@mailyard/policy-rules';
import { DUNNO, LeaveToService, note, refuse, type CheckContext, type Verdict } from './check-context.js';

/** Errors of a connection that was never made: nothing reached the scanner. */
const NOT_CONNECTED = new Set([
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EADDRNOTAVAIL',
]);

function notConnected(err: unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause) {
    if (NOT_CONNECTED.has((e as NodeJS.ErrnoException).code ?? '')) return true;
    // every address of the name tried (happy eyeballs), none connected
    if (e instanceof AggregateError && e.errors.length && e.errors.every(notConnected)) return true;
  }
  return false;
}

/** How long an intake leaves a scanner it could not connect to to the policy service. */
const UNREACHABLE_MS = 60_000;
/** Scanner URLs this process could not connect to, until when. */
const unreachable = new Map<string, number>();

/**
 * Whether an intake asks the scanner at `url` itself: not for a while after it could
 * not connect to it, so that a scanner only the service's host reaches costs the
 * message no local attempt (and no checks run twice) but once a minute.
 */
export function reachableFromHere(url: string): boolean {
  const until = unreachable.get(url);
  if (until === undefined) return true;
  if (Date.now() < until) return false;
  unreachable.delete(url);
  return true;
}

/**
 * clamd or rspamd did not answer: CONTENT_FILTER_FAILURE says whether the mail waits
 * (451, the sender retries) or goes on marked as not scanned. An intake that cannot
 * even connect to the scanner (its address, as the policy service publishes it, may be
 * one only the service's host reaches) leaves the stage to the service, which then
 * scans, or applies CONTENT_FILTER_FAILURE when it cannot either; and leaves it the
 * next minute's stages too (reachableFromHere).
 */
export function filterFailed(
  ctx: CheckContext,
  scanner: 'clamd' | 'rspamd',
  err: unknown,
  reply: Pick<PolicyReplies, 'filterUnavailable'>,
): Verdict {
  const { metrics, logger, config } = ctx.env;
  // the session stopped waiting and was answered (the intake logs it): not the scanner's failure
  if (ctx.signal?.aborted) return DUNNO;
  if (ctx.local && notConnected(err)) {
    unreachable.set(scanner === 'clamd' ? config.clamd_url : config.rspamd_url, Date.now() + UNREACHABLE_MS);
    logger.warn(
      { sid: ctx.req.sessionId, queueId: ctx.req.queueId, err },
      `${scanner} not reached from here; the policy service scans for the next ${UNREACHABLE_MS / 1000} s`,
    );
    throw new LeaveToService(`${scanner} not reached`);
  }
  metrics.scannerErrors.inc({ scanner });
  logger.warn({ sid: ctx.req.sessionId, queueId: ctx.req.queueId, err }, `${scanner} failed`);
  note(
    ctx,
    scanner === 'clamd' ? 'check_virus' : 'check_spam',
    'error',
    String((err as Error).message ?? err),
  );
  if (config.content_filter_failure === 'tempfail') return refuse(reply.filterUnavailable());
  ctx.headers.push({ name: `X-Mailyard-${scanner === 'clamd' ? 'Virus' : 'Spam'}-Scan`, value: 'failed' });
  return DUNNO;
}
