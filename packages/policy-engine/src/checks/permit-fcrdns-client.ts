import { DUNNO, PERMIT, type CheckImplementation } from '../check-context.js';
import { hasFcrdns } from '../dns-checks.js';

/**
 * `permit_fcrdns_client`: a client with forward-confirmed reverse DNS ends the list; a
 * failed lookup does not (the entries after it still run). The default set puts it just
 * before the per-client rate limits, so that they apply only to clients without it.
 */
export const permitFcrdnsClient: CheckImplementation<'permit_fcrdns_client'> = {
  // silent, as permit_mynetworks is: a permit is not a reason worth a header
  run: async (ctx) => ((await hasFcrdns(ctx.env.resolver, ctx.req.client.ip)) ? PERMIT : DUNNO),
};
