import { DUNNO, domainOf, isLocalDomain, note, refuse, type CheckImplementation } from '../check-context.js';
import { domainResolves } from '../dns-checks.js';

/**
 * `reject_unknown_sender_domain`: a sender domain without MX, A or AAAA (or with a
 * null MX) cannot receive bounces. As in Postfix, not for the domains we are final
 * destination for, whose mail must keep flowing when their own DNS is broken or not
 * published yet.
 */
export const rejectUnknownSenderDomain: CheckImplementation<'reject_unknown_sender_domain'> = {
  async run(ctx, _args, reply) {
    const s = ctx.req.sender;
    if (!s || domainOf(s).startsWith('[')) return DUNNO;
    const own = await isLocalDomain(ctx, domainOf(s));
    if (own) return DUNNO;
    const l = await domainResolves(ctx.env.resolver, domainOf(s));
    if (l.kind === 'found') return DUNNO;
    if (l.kind === 'temp') {
      note(ctx, 'reject_unknown_sender_domain', 'temperror', l.error);
      return refuse(reply.senderDomainTempFail(s));
    }
    note(ctx, 'reject_unknown_sender_domain', 'reject');
    return refuse(reply.senderDomainNotFound(s));
  },
};
