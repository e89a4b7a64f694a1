import { note, refuse, type CheckImplementation } from '../check-context.js';

/** `reject`: refuses whatever reaches it (554 5.7.1). */
export const reject: CheckImplementation<'reject'> = {
  run(ctx, _args, reply) {
    note(ctx, 'reject', 'reject');
    return refuse(reply.accessDenied());
  },
};
