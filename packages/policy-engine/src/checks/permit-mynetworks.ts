import { ipInNetworks } from '@mailyard/config';
import { DUNNO, PERMIT, type CheckImplementation } from '../check-context.js';

/** `permit_mynetworks`: clients in MYNETWORKS end the list. */
export const permitMynetworks: CheckImplementation<'permit_mynetworks'> = {
  run: (ctx) => (ipInNetworks(ctx.req.client.ip, ctx.env.config.mynetworks) ? PERMIT : DUNNO),
};
