import type { PolicyReplies } from '@mailyard/policy-rules';
import { DUNNO, note, refuse, type CheckContext, type Verdict } from './check-context.js';

/**
 * clamd or rspamd did not answer: CONTENT_FILTER_FAILURE says whether the mail waits
 * (451, the sender retries) or goes on marked as not scanned.
 */
export function filterFailed(
  ctx: CheckContext,
  scanner: 'clamd' | 'rspamd',
  err: unknown,
  reply: Pick<PolicyReplies, 'filterUnavailable'>,
): Verdict {
  const { metrics, logger, config } = ctx.env;
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
