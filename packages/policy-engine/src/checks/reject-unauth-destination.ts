import { DUNNO, domainOf, isLocalDomain, note, refuse, type CheckImplementation } from '../check-context.js';

/** `reject_unauth_destination`: a recipient neither in our domains nor in RELAY_DOMAINS. */
export const rejectUnauthDestination: CheckImplementation<'reject_unauth_destination'> = {
  async run(ctx, _args, reply) {
    const { req } = ctx;
    if (req.stage !== 'rcpt' || !req.recipient) return DUNNO;
    const d = domainOf(req.recipient);
    if (ctx.env.relayDomains.has(d)) return DUNNO;
    const local = await isLocalDomain(ctx, d);
    if (local) return DUNNO;
    note(ctx, 'reject_unauth_destination', 'reject', d);
    return refuse(reply.relayDenied(req.recipient));
  },
};
