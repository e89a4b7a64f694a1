import { addressKeys } from '@mailyard/policy-rules';
import { accessVerdict, queueAccessLookup } from '../access-lookup.js';
import { DUNNO, type CheckImplementation } from '../check-context.js';

/**
 * `check_sender_access TABLE`: the sender's address (and without its extension), domain,
 * parent domains, local@; `<>` for the null sender.
 */
export const checkSenderAccess: CheckImplementation<'check_sender_access'> = {
  prefetch(ctx, [table], batch) {
    const { sender } = ctx.req;
    if (sender !== null)
      queueAccessLookup(
        ctx,
        batch,
        'check_sender_access',
        table,
        addressKeys(sender, ctx.env.config.recipient_delimiter),
      );
  },
  run(ctx, [table], reply) {
    const { sender } = ctx.req;
    if (sender === null) return DUNNO;
    return accessVerdict(ctx, 'check_sender_access', table, `<${sender}>`, 'Sender address', reply);
  },
};
