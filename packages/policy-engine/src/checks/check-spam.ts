import { DUNNO, HOLD, note, refuse, type CheckImplementation } from '../check-context.js';
import { filterFailed, reachableFromHere } from '../content-filters.js';
import { greylistBand } from '../greylisting.js';
import { rspamdCheck } from '../rspamd.js';

/** The headers check_spam writes. */
const SPAM_HEADERS = ['X-Spam', 'X-Spam-Score'];

/**
 * `check_spam`: the message through rspamd (RSPAMD_URL), with our Authentication-Results.
 * Its action decides: reject (refused, or Junk with RSPAMD_REJECT_ACTION=quarantine),
 * soft reject (451), greylist (the greylist band), add header / rewrite subject (Junk).
 */
export const checkSpam: CheckImplementation<'check_spam'> = {
  /**
   * Decided where the session runs: the intake asks rspamd itself (the message then
   * crosses the broker once, not three times), and its greylist band is the same atomic
   * script on the shared Redis; an rspamd the intake cannot reach leaves the stage to
   * the service (filterFailed), for a while (reachableFromHere).
   */
  local: (ctx) => reachableFromHere(ctx.env.config.rspamd_url),
  async run(ctx, _args, reply) {
    const { req } = ctx;
    const { config, metrics } = ctx.env;
    if (req.stage !== 'data' || !config.rspamd_url || !ctx.message) return DUNNO;
    // the verdict headers are ours alone: one the client wrote (an "X-Spam: No" on spam,
    // below ours) goes, as rspamd's milter removes an upstream X-Spam flag
    for (const name of SPAM_HEADERS) ctx.removeHeaders.push({ name });
    const end = metrics.scannerLatency.startTimer({ scanner: 'rspamd' });
    let r;
    try {
      // our Authentication-Results go along, so rspamd can use them
      const auth = ctx.headers.map((h) => `${h.name}: ${h.value}\r\n`).join('');
      r = await rspamdCheck(
        config.rspamd_url,
        Buffer.concat([Buffer.from(auth), ctx.message]),
        {
          ip: req.client.ip,
          helo: req.client.helo,
          hostname: req.client.hostname,
          from: req.sender ?? '',
          rcpts: req.recipients,
          queueId: req.queueId,
          user: req.user,
        },
        config.content_filter_timeout,
        ctx.signal,
      );
      end();
    } catch (err) {
      end();
      return filterFailed(ctx, 'rspamd', err, reply);
    }
    ctx.rspamdSymbols = Object.keys(r.symbols);
    const top = Object.entries(r.symbols)
      .sort((a, b) => Math.abs(b[1].score ?? 0) - Math.abs(a[1].score ?? 0))
      .slice(0, 8)
      .map(([n, s]) => `${n}(${(s.score ?? 0).toFixed(2)})`)
      .join(' ');
    note(ctx, 'check_spam', r.action, top, r.score);
    const spam = r.action !== 'no action' && r.action !== 'greylist' && r.action !== 'soft reject';
    ctx.headers.push({ name: 'X-Spam', value: spam ? 'Yes' : 'No' });
    ctx.headers.push({
      name: 'X-Spam-Score',
      value: `${r.score.toFixed(2)} / ${r.required_score.toFixed(2)}`,
    });
    switch (r.action) {
      case 'reject':
        return config.rspamd_reject_action === 'reject' ? refuse(reply.spam()) : HOLD;
      case 'soft reject':
        return refuse(reply.spamTryLater());
      case 'greylist':
        return greylistBand(ctx, reply.spamGreylisted);
      case 'add header':
      case 'rewrite subject':
        return HOLD;
      default:
        return DUNNO;
    }
  },
};
