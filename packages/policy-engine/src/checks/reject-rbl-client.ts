import type { CheckImplementation } from '../check-context.js';
import { dnsListVerdict, dnsblName } from '../dns-checks.js';

/** `reject_rbl_client ZONE[=d.d.d.d]`: the client's address listed in a DNSBL. */
export const rejectRblClient: CheckImplementation<'reject_rbl_client'> = {
  // a DNS list is asked by the policy service, whose cache every intake shares
  local: () => false,
  run(ctx, [list], reply) {
    const ip = ctx.req.client.ip;
    return dnsListVerdict(
      ctx,
      'reject_rbl_client',
      list,
      dnsblName(ip, list.zone),
      `Client host [${ip}]`,
      reply,
    );
  },
};
