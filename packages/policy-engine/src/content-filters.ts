import type { PolicyReplies } from '@mailyard/policy-rules';
import { DUNNO, LeaveToService, note, refuse, type CheckContext, type Verdict } from './check-context.js';

/** Errors of a connection that was never made: nothing reached the scanner. */
const NOT_CONNECTED = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EADDRNOTAVAIL',
]);

function notConnected(err: unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause)
    if (NOT_CONNECTED.has((e as NodeJS.ErrnoException).code ?? '')) return true;
  return false;
}

/**
 * clamd or rspamd did not answer: CONTENT_FILTER_FAILURE says whether the mail waits
 * (451, the sender retries) or goes on marked as not scanned. An intake that cannot
 * even connect to the scanner (its address, as the policy service publishes it, may be
 * one only the service's host reaches) leaves the stage to the service, which then
 * scans, or applies CONTENT_FILTER_FAILURE when it cannot either.
 */
export function filterFailed(
  ctx: CheckContext,
  scanner: 'clamd' | 'rspamd',
  err: unknown,
  reply: Pick<PolicyReplies, 'filterUnavailable'>,
): Verdict {
  const { metrics, logger, config } = ctx.env;
  metrics.scannerErrors.inc({ scanner });
  if (ctx.local && notConnected(err)) {
    logger.debug(
      { sid: ctx.req.sessionId, queueId: ctx.req.queueId, err },
      `${scanner} not reached from here`,
    );
    throw new LeaveToService(`${scanner} not reached`);
  }
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
