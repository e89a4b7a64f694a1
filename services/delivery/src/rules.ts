import type { Bus } from '@mailyard/bus';
import { RoutingKeys, type Envelope } from '@mailyard/contracts';
import type { DkimSigner } from '@mailyard/dkim';
import type { Directory } from '@mailyard/directory';
import { createHash } from 'node:crypto';
import { holdOnFailure } from '@mailyard/bus';
import {
  autoReplyDecision,
  buildAutoReply,
  headerFields,
  type AccountRules,
  type MailRules,
  type Vacation,
} from '@mailyard/mail-rules';
import type { Counter, Logger } from '@mailyard/observability';
import { deliveredToHeader, derivedQueueId, domainOf } from '@mailyard/smtp-core';
import type { DeliveryConfig } from './config.js';

export interface RulesDeps {
  config: DeliveryConfig;
  bus: Bus;
  directory: Directory;
  rules: MailRules;
  dkim: DkimSigner | null;
  logger: Logger;
  metrics: { autoReplies: Counter<'result'>; userForwards: Counter<'result'> };
  /** How long the "already forwarded" markers are kept (seconds). */
  markerTtl: number;
}

/**
 * Whether the policy held the message as spam for the recipient it came to this account
 * through (`via`, the RCPT TO address as given: an alias, a plus-address, the account).
 */
export const junkFor = (env: Envelope, via: string): boolean =>
  !!env.filing?.junk.some((j) => j.toLowerCase() === via.toLowerCase());

/** Set once the account's forwarding has sent the message on (any value). */
export const forwardedKey = (queueId: string, account: string): string =>
  `forwarded:${queueId}:${createHash('sha256').update(account).digest('hex').slice(0, 16)}`;

/**
 * What an account's own settings do with a message for it: forwarding (before filing,
 * which it may replace) and the out-of-office reply (RFC 3834), at most once per sender
 * within the days the user chose.
 */
export function accountRules(deps: RulesDeps) {
  const { config, bus, directory, logger, metrics } = deps;

  /** Where a message for `address` goes from here: our own delivery, or outbound. */
  const routeFor = async (address: string) =>
    (await directory.isLocalDomain(domainOf(address))) ? RoutingKeys.delivery : RoutingKeys.outbound;

  /**
   * The out-of-office reply, best effort: the copy is already filed, so a failure here is
   * logged and counted, never a reason to run the message again (which would not reply
   * either: the copy would be found filed).
   */
  const autoReply = async (
    env: Envelope,
    message: Buffer,
    account: string,
    via: string,
    vacation: Vacation | null,
  ): Promise<void> => {
    if (!vacation?.enabled) return;
    const fields = headerFields(message);
    const f = env.filing;
    const decision = await autoReplyDecision({
      vacation,
      now: new Date(),
      mailFrom: env.mailFrom,
      recipient: via,
      isOwnAddress: (address) => directory.leadsToAlone(address, account),
      fields,
      junkOrBulk: !!f && (f.bulk || f.junk.length > 0),
    });
    if (!decision.reply) {
      metrics.autoReplies.inc({ result: 'skipped' });
      logger.info({ queueId: env.queueId, account, reason: decision.reason }, 'no out-of-office reply');
      return;
    }
    if (!(await deps.rules.claimReply(account, env.mailFrom, vacation.days))) {
      metrics.autoReplies.inc({ result: 'already-replied' });
      return;
    }
    try {
      const reply = buildAutoReply({
        vacation,
        from: decision.from,
        mailFrom: env.mailFrom,
        fields,
        myhostname: config.myhostname,
      });
      let data = reply.message;
      if (deps.dkim) {
        // for the domain of its From (an alias may be in another of ours), as DMARC aligns
        const signed = await deps.dkim.sign(data, domainOf(decision.from));
        if (signed.errors.length) logger.warn({ account, errors: signed.errors }, 'DKIM signing failed');
        data = Buffer.concat([Buffer.from(signed.headers), data]);
      }
      await bus.publishMail(await routeFor(env.mailFrom), data, reply.envelope);
      metrics.autoReplies.inc({ result: 'sent' });
      logger.info(
        {
          queueId: env.queueId,
          account,
          replyQueueId: reply.envelope.queueId,
          from: decision.from,
          to: env.mailFrom,
        },
        'out-of-office reply sent',
      );
    } catch (err) {
      // not claimed after all: the sender's next message may be answered
      await deps.rules.releaseReply(account, env.mailFrom).catch(() => undefined);
      throw err;
    }
  };

  const fromRedis = <T>(p: Promise<T>): Promise<T> => holdOnFailure('Redis', p);

  /**
   * Sends the message on to the account's forwarding targets, once per (queue id,
   * account): local targets through `delivery`, others through `outbound`. The envelope
   * sender becomes the account's own address (the null sender stays null), so the next
   * hop checks SPF against our domain, which sent it, and a failure comes back to the
   * user who set the forwarding, not to the original sender, whom we may not impersonate
   * (the sender rewriting SRS does, without a reverse path to keep). The copy carries
   * `Delivered-To: <account>` on top; a message that already carries it for this account
   * has been here before (a loop through another mailbox or server) and is not sent on.
   * Spam (Junk) is not forwarded. Unlike the reply, a failure here runs the message again:
   * the forward may be its only copy.
   */
  const forward = async (
    env: Envelope,
    message: Buffer,
    account: string,
    via: string,
    targets: string[],
  ): Promise<'forwarded' | 'done-before' | 'loop' | 'junk'> => {
    if (junkFor(env, via)) return 'junk';
    const fields = headerFields(message);
    if (fields.some((f) => f.name === 'delivered-to' && f.value.toLowerCase() === account.toLowerCase())) {
      metrics.userForwards.inc({ result: 'loop' });
      logger.warn({ queueId: env.queueId, account }, 'forwarding loop: kept in the mailbox, not sent on');
      return 'loop';
    }
    const marker = forwardedKey(env.queueId, account);
    if (await fromRedis(deps.rules.redisExists(marker))) return 'done-before';
    const data = Buffer.concat([Buffer.from(deliveredToHeader(account)), message]);
    const byRoute = new Map<string, string[]>();
    for (const t of targets) {
      const via = await routeFor(t);
      byRoute.set(via, [...(byRoute.get(via) ?? []), t]);
    }
    const { routes: _r, filing: _f, ...rest } = env;
    // a run overlapping this one (or after it failed to set the marker) forwards under the
    // same id: the next hop files or sends it once
    const queueId = derivedQueueId(env.queueId, `forward:${account.toLowerCase()}`);
    for (const [via, recipients] of byRoute) {
      await bus.publishMail(via as typeof RoutingKeys.delivery, data, {
        ...rest,
        queueId,
        mailFrom: env.mailFrom === '' ? '' : account,
        recipients,
        attempts: 0,
        lastError: null,
      });
    }
    await fromRedis(deps.rules.redisMark(marker, deps.markerTtl));
    metrics.userForwards.inc({ result: 'sent' });
    logger.info({ queueId: env.queueId, account, forwardQueueId: queueId, to: targets }, 'forwarded');
    return 'forwarded';
  };

  return {
    /** The account's rules (one Redis round trip; a failure holds the message). */
    read: (account: string): Promise<AccountRules> => fromRedis(deps.rules.get(account)),
    forward,
    /** `via`: the recipient the copy came through, as `forward`'s. */
    async afterFiling(
      env: Envelope,
      message: Buffer,
      account: string,
      via: string,
      rules: AccountRules,
    ): Promise<void> {
      try {
        await autoReply(env, message, account, via, rules.vacation);
      } catch (err) {
        metrics.autoReplies.inc({ result: 'failed' });
        logger.warn({ queueId: env.queueId, account, err }, 'out-of-office reply failed');
      }
    },
  };
}
