import { clamdScan } from '../clamd.js';
import { DUNNO, note, refuse, type CheckImplementation } from '../check-context.js';
import { filterFailed, reachableFromHere } from '../content-filters.js';

/** `check_virus`: the message through clamd (CLAMD_URL); infected mail is refused at DATA. */
export const checkVirus: CheckImplementation<'check_virus'> = {
  /** Decided where the session runs: the intake asks clamd itself (see check_spam). */
  local: (ctx) => reachableFromHere(ctx.env.config.clamd_url),
  async run(ctx, _args, reply) {
    const { config, metrics } = ctx.env;
    if (ctx.req.stage !== 'data' || !config.clamd_url || !ctx.message) return DUNNO;
    const end = metrics.scannerLatency.startTimer({ scanner: 'clamd' });
    try {
      const r = await clamdScan(config.clamd_url, ctx.message, config.content_filter_timeout, ctx.signal);
      end();
      if (!r.infected) {
        note(ctx, 'check_virus', 'clean');
        return DUNNO;
      }
      note(ctx, 'check_virus', 'infected', r.signature);
      return refuse(reply.virusFound(r.signature));
    } catch (err) {
      end();
      return filterFailed(ctx, 'clamd', err, reply);
    }
  },
};
