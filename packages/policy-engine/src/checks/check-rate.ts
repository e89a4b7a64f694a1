import { randomUUID } from 'node:crypto';
import type { PolicyReply, PolicyRequest } from '@mailyard/contracts';
import {
  PolicyKeys,
  policyReply,
  type CheckReplyName,
  type PolicyReplies,
  type RateCounter,
} from '@mailyard/policy-rules';
import { DUNNO, domainOf, note, refuse, type CheckImplementation } from '../check-context.js';

type RateReplies = Pick<PolicyReplies, CheckReplyName<'check_rate'>>;

/** What a counter counts in this request (its Redis key), and the reply once over; null: nothing. */
const COUNTED: Record<
  Exclude<RateCounter, 'message_recipients'>,
  (req: PolicyRequest, reply: RateReplies) => { key: string; reply: PolicyReply } | null
> = {
  client_connections: (req, reply) =>
    req.stage === 'connect' ? { key: req.client.ip, reply: reply.tooManyConnections(req.client.ip) } : null,
  client_messages: (req, reply) =>
    req.stage === 'mail' ? { key: req.client.ip, reply: reply.tooManyClientMessages(req.client.ip) } : null,
  sender_domain_messages: (req, reply) => {
    if (req.stage !== 'mail' || !req.sender) return null;
    const domain = domainOf(req.sender);
    return { key: domain, reply: reply.tooManyDomainMessages(domain) };
  },
  user_recipients: (req, reply) => {
    if (req.stage !== 'rcpt' || !req.user) return null;
    const user = req.user.toLowerCase();
    return { key: user, reply: reply.userTooManyRecipients(user) };
  },
};

/**
 * `check_rate COUNTER LIMIT/WINDOW`: a sliding window per counter and key in Redis, one
 * Lua call, shared by every instance; `message_recipients` counts this message's
 * recipients without Redis.
 */
export const checkRate: CheckImplementation<'check_rate'> = {
  // only a counter this request does not count, or this message's recipients, needs no Redis
  local: (ctx, [counter]) =>
    counter === 'message_recipients' || COUNTED[counter](ctx.req, policyReply) === null,
  async run(ctx, [counter, rate], reply) {
    const { req } = ctx;
    if (counter === 'message_recipients') {
      if (req.stage !== 'rcpt') return DUNNO;
      if (req.recipients.length + 1 > rate.limit) {
        note(ctx, 'check_rate', 'over', `${counter} ${rate.spec}`);
        return refuse(reply.tooManyRecipients());
      }
      return DUNNO;
    }
    const counted = COUNTED[counter](req, reply);
    if (!counted) return DUNNO;
    const now = ctx.env.now();
    const n = await ctx.env.redis.policyRate(
      PolicyKeys.rate(counter, counted.key),
      now,
      rate.windowMs,
      rate.limit,
      `${now}:${randomUUID()}`,
    );
    ctx.roundTrips++;
    if (n === -1) return DUNNO;
    note(ctx, 'check_rate', 'over', `${counter} ${n}/${rate.spec}`);
    return refuse(counted.reply);
  },
};
