import type { CheckImplementation } from '../check-context.js';
import { clientDnsVerdict, lookupFcrdns, type Lookup } from '../dns-checks.js';

/** `reject_unknown_client_hostname`: no forward-confirmed reverse DNS (PTR, and its A/AAAA back). */
export const rejectUnknownClientHostname: CheckImplementation<'reject_unknown_client_hostname'> = {
  async run(ctx, _args, reply) {
    const ip = ctx.req.client.ip;
    const l = await lookupFcrdns(ctx.env.resolver, ip);
    const v: Lookup<true> =
      l.kind === 'found' ? (l.value.confirmed ? { kind: 'found', value: true } : { kind: 'none' }) : l;
    return clientDnsVerdict(
      ctx,
      'reject_unknown_client_hostname',
      v,
      () => reply.noClientHostname(ip),
      reply.clientDnsTempFail,
    );
  },
};
