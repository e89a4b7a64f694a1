import { DUNNO, domainOf, type CheckImplementation } from '../check-context.js';
import { dnsListVerdict } from '../dns-checks.js';

/** `reject_rhsbl_sender ZONE[=d.d.d.d]`: the sender's domain listed in an RHSBL. */
export const rejectRhsblSender: CheckImplementation<'reject_rhsbl_sender'> = {
  // a DNS list is asked by the policy service, whose cache every intake shares
  local: () => false,
  run(ctx, [list], reply) {
    const { sender } = ctx.req;
    if (!sender) return DUNNO;
    return dnsListVerdict(
      ctx,
      'reject_rhsbl_sender',
      list,
      `${domainOf(sender)}.${list.zone}`,
      `Sender address <${sender}>`,
      reply,
    );
  },
};
