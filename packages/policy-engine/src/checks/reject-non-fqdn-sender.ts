import { DUNNO, domainOf, note, refuse, type CheckImplementation } from '../check-context.js';

/** `reject_non_fqdn_sender`: MAIL FROM whose domain has no dot (the null sender passes). */
export const rejectNonFqdnSender: CheckImplementation<'reject_non_fqdn_sender'> = {
  run(ctx, _args, reply) {
    const { sender } = ctx.req;
    if (!sender) return DUNNO;
    if (domainOf(sender).includes('.') || domainOf(sender).startsWith('[')) return DUNNO;
    note(ctx, 'reject_non_fqdn_sender', 'reject', sender);
    return refuse(reply.nonFqdnSender(sender));
  },
};
