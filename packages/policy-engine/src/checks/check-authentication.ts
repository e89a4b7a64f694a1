import { authenticate } from 'mailauth';
import { PolicyKeys } from '@mailyard/policy-rules';
import { DUNNO, HOLD, domainOf, note, refuse, type CheckImplementation } from '../check-context.js';
import { resultOf } from '../spf.js';

/**
 * `check_authentication`: SPF, DKIM, DMARC and ARC (mailauth, through our resolver);
 * adds our Authentication-Results (the engine removes any under our name that came with
 * the message) and applies the sender domain's DMARC policy: reject refuses, quarantine
 * files into Junk.
 */
export const checkAuthentication: CheckImplementation<'check_authentication'> = {
  /**
   * mailauth through the process's cached resolver runs as well where the session runs;
   * only remembering an authenticated domain for greylisting writes shared state.
   */
  local: (ctx) => !ctx.env.config.greylist_auto_allow_authenticated,
  async run(ctx, _args, reply) {
    const { req } = ctx;
    const { config, redis, authservId } = ctx.env;
    // SPF/DMARC judge the path from the sender's domain to us; a submitting user's
    // own IP says nothing about that (their home address would fail their domain's SPF)
    if (req.user || req.stage !== 'data' || !ctx.message) return DUNNO;
    const res = await authenticate(ctx.message, {
      ip: req.client.ip.replace(/^::ffff:/i, ''),
      helo: req.client.helo || undefined,
      sender: req.sender ?? '',
      mta: authservId,
      // mailauth's lookups go through our resolver too (cached, timed and counted like the others)
      resolver: (name: string, type: string) => ctx.env.resolver.resolve(name, type),
      disableBimi: true,
    });
    for (const h of res.headers.split(/\r\n(?![ \t])/)) {
      const i = h.indexOf(':');
      if (i > 0) ctx.headers.push({ name: h.slice(0, i), value: h.slice(i + 1).trim() });
    }
    const spf = resultOf(res.spf) ?? 'none';
    ctx.spf = spf;
    note(ctx, 'spf', spf);
    const dkim = (res.dkim?.results ?? []).map((r) => r.status?.result ?? 'none');
    if (config.greylist_auto_allow_authenticated && req.sender) {
      const domain = domainOf(req.sender);
      const dkimOk = (res.dkim?.results ?? []).some(
        (r) => r.status?.result === 'pass' && r.signingDomain?.toLowerCase() === domain,
      );
      if (spf === 'pass' || dkimOk) {
        // only spares the domain's later mail greylisting: not written (Redis at its
        // maxmemory refuses a new key, or fails), this message is decided all the same
        // rather than deferred, and the domain is noted by a later message
        await redis
          .set(PolicyKeys.greylistAuthenticated(domain), '1', 'PX', config.greylist_pass_ttl)
          .catch((err: unknown) =>
            ctx.env.logger.warn({ err, domain }, 'authenticated domain not noted for greylisting'),
          );
        ctx.roundTrips++;
      }
    }
    note(ctx, 'dkim', dkim.length ? dkim.join(',') : 'none');
    const arc = resultOf(res.arc);
    if (arc) note(ctx, 'arc', arc);
    const dmarc = res.dmarc as { status?: { result?: string }; policy?: string; domain?: string } | false;
    const dmarcResult = dmarc ? (dmarc.status?.result ?? 'none') : 'none';
    note(ctx, 'dmarc', dmarcResult, dmarc && dmarc.policy ? `p=${dmarc.policy}` : undefined);
    if (spf === 'temperror') return refuse(reply.spfTempError());
    if (dmarcResult === 'temperror') return refuse(reply.dmarcTempError());
    if (dmarc && dmarcResult === 'fail') {
      // a signature whose key could not be looked up may well have passed: a DNS hiccup
      // must not turn into a permanent refusal (or Junk) of mail the sender signed
      if ((dmarc.policy === 'reject' || dmarc.policy === 'quarantine') && dkim.includes('temperror'))
        return refuse(reply.dkimTempError());
      if (dmarc.policy === 'reject') return refuse(reply.dmarcReject(dmarc.domain));
      if (dmarc.policy === 'quarantine') return HOLD;
    }
    return DUNNO;
  },
};
