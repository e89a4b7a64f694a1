import type { CheckImplementation } from '../check-context.js';
import { greylist } from '../greylisting.js';

/** `check_policy_greylist`: greylists every unknown (client network, sender, recipient) triplet. */
export const checkPolicyGreylist: CheckImplementation<'check_policy_greylist'> = {
  run: (ctx, _args, reply) => greylist(ctx, 'check_policy_greylist', reply.greylisted),
};
