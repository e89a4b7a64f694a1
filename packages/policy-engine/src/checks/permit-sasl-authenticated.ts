import { DUNNO, PERMIT, type CheckImplementation } from '../check-context.js';

/** `permit_sasl_authenticated`: a logged-in (submission) user ends the list. */
export const permitSaslAuthenticated: CheckImplementation<'permit_sasl_authenticated'> = {
  run: (ctx) => (ctx.req.user ? PERMIT : DUNNO),
};
