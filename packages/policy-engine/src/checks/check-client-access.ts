import { clientKeys } from '@mailyard/policy-rules';
import { accessVerdict, queueAccessLookup } from '../access-lookup.js';
import type { CheckImplementation } from '../check-context.js';

/** `check_client_access TABLE`: the client's IP, then every network containing it. */
export const checkClientAccess: CheckImplementation<'check_client_access'> = {
  prefetch(ctx, [table], batch) {
    queueAccessLookup(ctx, batch, 'check_client_access', table, clientKeys(ctx.req.client.ip));
  },
  run(ctx, [table], reply) {
    const { client } = ctx.req;
    return accessVerdict(
      ctx,
      'check_client_access',
      table,
      `${client.hostname ?? 'unknown'}[${client.ip}]`,
      'Client host',
      reply,
    );
  },
};
