import { DUNNO, note, refuse, type CheckImplementation } from '../check-context.js';

/** `reject_spf_fail`: refuses when check_authentication, earlier in the list, found SPF fail. */
export const rejectSpfFail: CheckImplementation<'reject_spf_fail'> = {
  run(ctx, _args, reply) {
    if (ctx.spf !== 'fail') return DUNNO;
    note(ctx, 'reject_spf_fail', 'reject');
    return refuse(reply.spfFail());
  },
};
