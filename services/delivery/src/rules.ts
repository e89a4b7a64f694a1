import type { Bus } from '@mailyard/bus';
import { RoutingKeys, type Envelope } from '@mailyard/contracts';
import type { DkimSigner } from '@mailyard/dkim';
import type { Directory } from '@mailyard/directory';
import { autoReplyDecision, buildAutoReply, headerFields, type MailRules } from '@mailyard/mail-rules';
import type { Counter, Logger } from '@mailyard/observability';
import { domainOf } from '@mailyard/smtp-core';
import type { DeliveryConfig } from './config.js';

export interface RulesDeps {
  config: DeliveryConfig;
  bus: Bus;
  directory: Directory;
  rules: MailRules;
  dkim: DkimSigner | null;
  logger: Logger;
  metrics: { autoReplies: Counter<'result'> };
}

/**
 * What an account's own settings do with a message filed for it: the out-of-office reply
 * (RFC 3834), at most once per sender within the days the user chose.
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
  const autoReply = async (env: Envelope, message: Buffer, account: string): Promise<void> => {
    const { vacation } = await deps.rules.get(account);
    if (!vacation?.enabled) return;
    const fields = headerFields(message);
    const f = env.filing;
    const decision = autoReplyDecision({
      vacation,
      now: new Date(),
      mailFrom: env.mailFrom,
      // the aliases are read only when a reply is possible (a vacation on)
      ownAddresses: await directory.addressesOf(account),
      fields,
      junkOrBulk: !!f && (f.bulk || f.junk.length > 0),
      recipientDelimiter: config.recipient_delimiter,
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
        account,
        mailFrom: env.mailFrom,
        fields,
        myhostname: config.myhostname,
      });
      let data = reply.message;
      if (deps.dkim) {
        const signed = await deps.dkim.sign(data, domainOf(account));
        if (signed.errors.length) logger.warn({ account, errors: signed.errors }, 'DKIM signing failed');
        data = Buffer.concat([Buffer.from(signed.headers), data]);
      }
      await bus.publishMail(await routeFor(env.mailFrom), data, reply.envelope);
      metrics.autoReplies.inc({ result: 'sent' });
      logger.info(
        { queueId: env.queueId, account, replyQueueId: reply.envelope.queueId, to: env.mailFrom },
        'out-of-office reply sent',
      );
    } catch (err) {
      // not claimed after all: the sender's next message may be answered
      await deps.rules.releaseReply(account, env.mailFrom).catch(() => undefined);
      throw err;
    }
  };

  return {
    async afterFiling(env: Envelope, message: Buffer, account: string, _via: string): Promise<void> {
      try {
        await autoReply(env, message, account);
      } catch (err) {
        metrics.autoReplies.inc({ result: 'failed' });
        logger.warn({ queueId: env.queueId, account, err }, 'out-of-office reply failed');
      }
    },
  };
}
