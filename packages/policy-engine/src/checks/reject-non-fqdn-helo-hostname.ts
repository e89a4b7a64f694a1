import { DUNNO, note, refuse, type CheckImplementation } from '../check-context.js';

/** `reject_non_fqdn_helo_hostname`: a HELO name without a dot (address literals pass). */
export const rejectNonFqdnHeloHostname: CheckImplementation<'reject_non_fqdn_helo_hostname'> = {
  run(ctx, _args, reply) {
    const { req } = ctx;
    const helo = req.client.helo;
    if (req.stage === 'connect' || !helo || helo.startsWith('[')) return DUNNO;
    if (helo.replace(/\.$/, '').includes('.')) return DUNNO;
    note(ctx, 'reject_non_fqdn_helo_hostname', 'reject', helo);
    return refuse(reply.nonFqdnHelo(helo));
  },
};
