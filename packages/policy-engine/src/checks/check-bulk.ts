import { DUNNO, note, type CheckImplementation } from '../check-context.js';

/**
 * `check_bulk`: List-Unsubscribe, Precedence bulk/junk or rspamd's bulk symbols mark
 * the message for BULK_FOLDER (X-Mailyard-Bulk); never refuses.
 */
export const checkBulk: CheckImplementation<'check_bulk'> = {
  run(ctx) {
    if (ctx.req.stage !== 'data' || !ctx.message) return DUNNO;
    const head = headerBlock(ctx.message);
    const why: string[] = [];
    if (/^list-unsubscribe:/im.test(head)) why.push('List-Unsubscribe');
    if (/^precedence:[ \t]*(bulk|junk)\b/im.test(head)) why.push('Precedence');
    for (const s of ctx.rspamdSymbols) if (/BULK|MAILCHIMP|NEWSLETTER/.test(s)) why.push(s);
    if (why.length) {
      ctx.bulk = true;
      ctx.headers.push({ name: 'X-Mailyard-Bulk', value: 'yes' });
      note(ctx, 'check_bulk', 'bulk', why.join(' '));
    }
    return DUNNO;
  },
};

function headerBlock(message: Buffer): string {
  const end = message.indexOf('\r\n\r\n');
  return message.subarray(0, end === -1 ? Math.min(message.length, 65536) : end).toString('latin1');
}
