import { PolicyKeys, addressKeys } from '@mailyard/policy-rules';
import {
  DUNNO,
  PERMIT,
  note,
  refuse,
  type CheckContext,
  type CheckImplementation,
  type RedisBatch,
} from '../check-context.js';

/**
 * Queues the reads of each recipient's own allow and block lists for the sender (its
 * address, domain and parent domains). At the data stage the engine reads them for
 * every recipient: an allowed sender's mail is not filed into Junk.
 */
export function queueUserLists(ctx: CheckContext, batch: RedisBatch, rcpts: string[]): void {
  const { sender } = ctx.req;
  if (!sender || !rcpts.length) return;
  const senderKeys = addressKeys(sender).filter((k) => !k.endsWith('@'));
  for (const rcpt of rcpts) {
    for (const kind of ['allow', 'block'] as const) {
      batch.read(
        `lists:${kind}:${rcpt}`,
        (p) => p.smismember(PolicyKeys.userList(rcpt, kind), ...senderKeys),
        (v) => {
          if ((v as number[]).some((x) => x === 1)) (kind === 'allow' ? ctx.allowed : ctx.blocked).add(rcpt);
        },
      );
    }
  }
}

/** `check_user_lists`: the recipient's blocked senders are refused, allowed ones end the list. */
export const checkUserLists: CheckImplementation<'check_user_lists'> = {
  prefetch(ctx, _args, batch) {
    const { req } = ctx;
    if (req.stage === 'rcpt' && req.recipient) queueUserLists(ctx, batch, [req.recipient]);
  },
  run(ctx, _args, reply) {
    const { req } = ctx;
    if (req.stage !== 'rcpt' || !req.recipient) return DUNNO;
    if (ctx.blocked.has(req.recipient)) {
      note(ctx, 'check_user_lists', 'blocked', req.sender ?? '');
      return refuse(reply.senderBlocked(req.recipient));
    }
    if (ctx.allowed.has(req.recipient)) {
      note(ctx, 'check_user_lists', 'allowed', req.sender ?? '');
      return PERMIT;
    }
    return DUNNO;
  },
};
