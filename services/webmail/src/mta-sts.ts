import type { FastifyInstance } from 'fastify';
import { normalizeDomain } from '@mailyard/smtp-core';
import type { Ctx } from './context.js';
import { ApiError, errors } from './errors.js';

/** RFC 8461 §3.2: a week; senders refetch when the `_mta-sts` TXT id changes. */
const MAX_AGE = 604_800;

/**
 * The MTA-STS policy of each local domain (RFC 8461 §3.3), served on
 * https://mta-sts.<domain>/.well-known/mta-sts.txt: the CNAME `mailyard domain records`
 * asks for points that name here. It names MYHOSTNAME as the only MX, in MTA_STS_MODE;
 * changing the mode means publishing a new id in the `_mta-sts` TXT record.
 */
export function registerMtaStsRoutes(app: FastifyInstance, ctx: Ctx): void {
  app.get('/.well-known/mta-sts.txt', async (req, reply) => {
    const m = /^mta-sts\.(.+)$/i.exec(req.hostname.replace(/:\d+$/, ''));
    const domain = m ? normalizeDomain(m[1]!) : null;
    let local = false;
    try {
      local = !!domain && (await ctx.directory.isLocalDomain(domain));
    } catch {
      throw errors.unavailable();
    }
    if (!local) throw new ApiError(404, 'no_such_domain', 'No MTA-STS policy for this name here');
    const policy = [
      'version: STSv1',
      `mode: ${ctx.config.mta_sts_mode}`,
      `mx: ${ctx.config.myhostname}`,
      `max_age: ${MAX_AGE}`,
      '',
    ].join('\r\n');
    return reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store').send(policy);
  });
}
