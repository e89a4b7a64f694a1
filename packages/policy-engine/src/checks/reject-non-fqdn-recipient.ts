import { DUNNO, domainOf, note, refuse, type CheckImplementation } from '../check-context.js';

/** `reject_non_fqdn_recipient`: RCPT TO whose domain has no dot. */
export const rejectNonFqdnRecipient: CheckImplementation<'reject_non_fqdn_recipient'> = {
  run(ctx, _args, reply) {
    const { recipient } = ctx.req;
    if (!recipient || ctx.req.stage !== 'rcpt') return DUNNO;
    if (domainOf(recipient).includes('.') || domainOf(recipient).startsWith('[')) return DUNNO;
    note(ctx, 'reject_non_fqdn_recipient', 'reject', recipient);
    return refuse(reply.nonFqdnRecipient(recipient));
  },
};
