import type { CheckImplementation } from '../check-context.js';
import { clientDnsVerdict, lookupPtr } from '../dns-checks.js';

/** `reject_unknown_reverse_client_hostname`: a client address without a PTR record. */
export const rejectUnknownReverseClientHostname: CheckImplementation<'reject_unknown_reverse_client_hostname'> =
  {
    async run(ctx, _args, reply) {
      const ip = ctx.req.client.ip;
      const l = await lookupPtr(ctx.env.resolver, ip);
      return clientDnsVerdict(
        ctx,
        'reject_unknown_reverse_client_hostname',
        l,
        () => reply.noReverseHostname(ip),
        reply.clientDnsTempFail,
      );
    },
  };
