import { addressKeys } from '@mailyard/policy-rules';
import { accessVerdict, queueAccessLookup } from '../access-lookup.js';
import { DUNNO, type CheckImplementation } from '../check-context.js';

/**
 * `check_recipient_access TABLE`: the recipient's address (and without its extension:
 * `alice@` holds for `alice+tag@`, which is delivered to her), domain, parent domains, local@.
 */
export const checkRecipientAccess: CheckImplementation<'check_recipient_access'> = {
  prefetch(ctx, [table], batch) {
    const { recipient } = ctx.req;
    if (recipient)
      queueAccessLookup(
        ctx,
        batch,
        'check_recipient_access',
        table,
        addressKeys(recipient, ctx.env.config.recipient_delimiter),
      );
  },
  run(ctx, [table], reply) {
    const { recipient } = ctx.req;
    if (!recipient) return DUNNO;
    return accessVerdict(ctx, 'check_recipient_access', table, `<${recipient}>`, 'Recipient address', reply);
  },
};
