import { PolicyKeys, addressKeys, baseLocalPart } from '@mailyard/policy-rules';
import {
  DUNNO,
  PERMIT,
  note,
  refuse,
  type CheckContext,
  type CheckImplementation,
  type RedisBatch,
} from '../check-context.js';
import type { UserLists } from '../user-list-copy.js';

/**
 * Whose lists apply to mail for the recipients that carry an extension: the account the
 * directory delivers each to (`alice+tag@` to `alice@`), as it resolves RCPT TO: an
 * account named with the delimiter in it (`jean-luc@` with `-`) keeps its own lists.
 * Only those recipients are looked up (an intake has them cached from RCPT TO); the
 * others are their own owners.
 */
export async function resolveListOwners(ctx: CheckContext, rcpts: string[]): Promise<void> {
  const delimiter = ctx.env.config.recipient_delimiter;
  for (const rcpt of rcpts) {
    const a = rcpt.toLowerCase();
    const at = a.lastIndexOf('@');
    if (at <= 0 || baseLocalPart(a.slice(0, at), delimiter) === a.slice(0, at)) continue;
    const { match } = await ctx.env.directory.lookup(a);
    if (match?.kind === 'account' && match.account !== a) ctx.listOwners.set(a, match.account);
  }
}

/**
 * Queues the reads of each recipient's own allow and block lists for the sender (its
 * address, without its extension too, domain and parent domains). At the data stage the engine reads them for
 * every recipient: an allowed sender's mail is not filed into Junk. An intake's copy
 * answers for the recipients it holds, and is filled with the whole lists of the others.
 */
export function queueUserLists(ctx: CheckContext, batch: RedisBatch, rcpts: string[]): void {
  const { sender } = ctx.req;
  if (!sender || !rcpts.length) return;
  const delimiter = ctx.env.config.recipient_delimiter;
  const senderKeys = addressKeys(sender, delimiter).filter((k) => !k.endsWith('@'));
  const holds = (rcpt: string, lists: UserLists) => {
    if (senderKeys.some((k) => lists.allow.has(k))) ctx.allowed.add(rcpt);
    if (senderKeys.some((k) => lists.block.has(k))) ctx.blocked.add(rcpt);
  };
  const copy = ctx.env.userLists?.() ?? null;
  for (const rcpt of rcpts) {
    const owner = ctx.listOwners.get(rcpt.toLowerCase()) ?? rcpt;
    const known = copy?.get(owner);
    if (known) {
      holds(rcpt, known);
      continue;
    }
    if (copy) {
      const generation = copy.generation;
      const read: Partial<Record<'allow' | 'block', Set<string>>> = {};
      for (const kind of ['allow', 'block'] as const) {
        batch.read(
          `lists:${kind}:${rcpt}`,
          (p) => p.smembers(PolicyKeys.userList(owner, kind)),
          (v) => {
            read[kind] = new Set(v as string[]);
            if (!read.allow || !read.block) return;
            const lists = { allow: read.allow, block: read.block };
            copy.set(owner, lists, generation);
            holds(rcpt, lists);
          },
        );
      }
      continue;
    }
    for (const kind of ['allow', 'block'] as const) {
      batch.read(
        `lists:${kind}:${rcpt}`,
        (p) => p.smismember(PolicyKeys.userList(owner, kind), ...senderKeys),
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
