import { note, refuse, type CheckImplementation } from '../check-context.js';

/** `defer`: asks whatever reaches it to try again later (450 4.7.1). */
export const defer: CheckImplementation<'defer'> = {
  run(ctx, _args, reply) {
    note(ctx, 'defer', 'defer');
    return refuse(reply.tryLater());
  },
};
