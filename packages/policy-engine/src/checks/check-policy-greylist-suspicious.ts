import { DUNNO, note, type CheckImplementation } from '../check-context.js';
import { greylist, suspicion } from '../greylisting.js';

/**
 * `check_policy_greylist_suspicious` (the default): greylists unknown triplets only from
 * clients without forward-confirmed reverse DNS or listed in GREYLIST_DNSBL.
 */
export const checkPolicyGreylistSuspicious: CheckImplementation<'check_policy_greylist_suspicious'> = {
  // a trusted client (the common case) is decided by DNS alone; a suspicious one is greylisted in Redis
  async local(ctx) {
    const { req } = ctx;
    if (req.stage !== 'rcpt' || !req.recipient || req.sender === null) return true;
    return ctx.env.config.greylist_dnsbl.length === 0 && (await suspicion(ctx)) === null;
  },
  async run(ctx, _args, reply) {
    const { req } = ctx;
    if (req.stage !== 'rcpt' || !req.recipient || req.sender === null) return DUNNO;
    const why = await suspicion(ctx);
    if (why) return greylist(ctx, 'check_policy_greylist_suspicious', reply.greylisted, why);
    note(ctx, 'check_policy_greylist_suspicious', 'trusted');
    return DUNNO;
  },
};
