import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import {
  BackendUnavailableError,
  delayQueueSpec,
  envelopeParts,
  holdOnFailure,
  type Bus,
  type Delivery,
} from '@mailyard/bus';
import {
  EventKeys,
  MailMessages,
  RoutingKeys,
  delayQueue,
  type Envelope,
  type MailboxChanged,
} from '@mailyard/contracts';
import {
  AliasExpansionError,
  DirectoryUnavailableError,
  type Directory,
  type Expansion,
} from '@mailyard/directory';
import type { DkimSigner } from '@mailyard/dkim';
import { isStorageFault, MailAccount, Quotas, type MaildirStore } from '@mailyard/mailstore';
import { MailRules } from '@mailyard/mail-rules';
import { Counter, Histogram, type Logger, type ReadinessCheck, type Registry } from '@mailyard/observability';
import { returnToSender, type RecipientReport } from '@mailyard/dsn';
import { Claims } from '@mailyard/queue-admin/claims';
import { DeferredIndex } from '@mailyard/queue-admin/deferred-index';
import { deliveredToHeader, returnPathHeader } from '@mailyard/smtp-core';
import type { DeliveryConfig } from './config.js';
import { accountRules, forwardedKey, junkFor } from './rules.js';

export interface DeliveryDeps {
  bus: Bus;
  redis: Redis;
  directory: Directory;
  store: MaildirStore;
  logger: Logger;
  registry: Registry;
  /** Storage quota per account; default: config quota_storage, overridden per account in Redis. */
  quotas?: Quotas;
  /** Signs out-of-office replies with the DKIM keys of the user's domain, when it has some. */
  dkim?: DkimSigner | null;
  /** How long a claim to return a recipient holds unless renewed; default RETURN_CLAIM_MS. */
  returnClaimMs?: number;
}

export interface DeliveryService {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Not ready while the mail store's file system fails (full, read-only, I/O errors). */
  readiness: ReadinessCheck[];
}

function createMetrics(registry: Registry) {
  return {
    deliveries: new Counter({
      name: 'mailyard_delivery_deliveries_total',
      help: 'Copies filed (written), skipped as already delivered (duplicate), returned (over-quota, unknown-user, expired); recipients deferred by a run (alias-expansion, mailbox-unavailable)',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    retries: new Counter({
      name: 'mailyard_delivery_retries_total',
      help: 'Messages of deferred recipients sent to a delay queue delivery.retry.<d> (retry scheduled)',
      registers: [registry],
    }),
    failures: new Counter({
      name: 'mailyard_delivery_failures_total',
      help: 'Runs of a message that failed (held for a backend, retried or dead-lettered)',
      registers: [registry],
    }),
    bounces: new Counter({
      name: 'mailyard_delivery_bounces_total',
      help: 'DSNs returned to senders (mailbox over quota, recipient gone since acceptance, deferred past MAXIMAL_QUEUE_LIFETIME)',
      registers: [registry],
    }),
    delayWarnings: new Counter({
      name: 'mailyard_delivery_delay_warnings_total',
      help: 'Delay warnings sent to senders (recipients deferred past DELAY_WARNING_TIME)',
      registers: [registry],
    }),
    forwarded: new Counter({
      name: 'mailyard_delivery_forwarded_total',
      help: 'Messages passed to outbound for external alias targets',
      registers: [registry],
    }),
    userForwards: new Counter({
      name: 'mailyard_delivery_user_forwards_total',
      help: "Messages sent on by an account's forwarding (sent), or kept because they looped (loop)",
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    autoReplies: new Counter({
      name: 'mailyard_delivery_auto_replies_total',
      help: 'Out-of-office replies sent, or skipped (a list, bulk, already answered...)',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    latency: new Histogram({
      name: 'mailyard_delivery_latency_seconds',
      help: 'From acceptance (envelope receivedAt) to the file in new/',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
  };
}

/** A Redis call whose failure holds the message (the bus runs it again), never fails it. */
const fromRedis = <T>(p: Promise<T>): Promise<T> => holdOnFailure('Redis', p);

// The records of a copy (delivering:, delivered:) are written when Redis is at its
// maxmemory (allow-oom): two small keys per copy filed, one replacing the other, expiring
// with the message's other records. Refused, every message would be held until Redis had
// room (nothing is filed without its delivering: record), and one filed whose delivered:
// record was refused would be looked for again on every rerun.

/**
 * A copy begins: KEYS[1] its delivered: record, KEYS[2] its delivering: record, set
 * (ARGV[1] s) unless there. Returns both as they were (nil: none).
 */
const BEGIN_COPY = `#!lua flags=allow-oom
local done = redis.call('GET', KEYS[1])
local before = redis.call('GET', KEYS[2])
if not before then redis.call('SET', KEYS[2], '1', 'EX', ARGV[1]) end
return {done, before}`;

/** A copy settled: KEYS[1] (delivered:) set to ARGV[1] for ARGV[2] s, KEYS[2] (delivering:) gone. */
const SETTLE_COPY = `#!lua flags=allow-oom
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1`;

/**
 * How far the alias expansion of a message is queued to outbound: KEYS[1] a hash, ARGV[1]
 * its lifetime in s, then field and value pairs. Allowed at maxmemory: one field per
 * recipient, and a part queued whose record is refused would be queued again by the rerun.
 */
const RECORD_PROGRESS = `#!lua flags=allow-oom
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1`;

/**
 * MDA: consumes `delivery`, expands each recipient (account, aliases with nesting and
 * loop protection, plus-address, catch-all), files one copy per account into its
 * Maildir, forwards external alias targets to `outbound`, and acks only after every
 * copy is durable. Recipients it cannot serve now (an alias over ALIAS_EXPANSION_LIMIT,
 * a mailbox it cannot write to) wait in a delay queue `delivery.retry.<d>` and come back
 * on DELIVERY_RETRY_SCHEDULE, until MAXIMAL_QUEUE_LIFETIME returns them to the sender.
 * Redelivery is harmless: copies are keyed on queue id + account.
 */
export function buildDelivery(config: DeliveryConfig, deps: DeliveryDeps): DeliveryService {
  const { bus, redis, directory, store, logger } = deps;
  const metrics = createMetrics(deps.registry);
  const quotas = deps.quotas ?? new Quotas(redis, config.quota_storage);
  const schedule = config.delivery_retry_schedule;
  /**
   * How long the records of a message's runs live (DELIVERY_DEDUPE_TTL, in seconds): at
   * least as long as a deferred recipient may wait, the records its retries skip by.
   */
  const recordTtl = Math.max(
    config.delivery_dedupe_ttl,
    Math.ceil(config.maximal_queue_lifetime / 1000) + 86_400,
  );
  const delayQueues = [...new Set(schedule)].map((d) => delayQueueSpec(RoutingKeys.delivery, d));
  /** What `mailyard queue list` shows of the retries waiting in the delay queues. */
  const index = new DeferredIndex(redis);
  const copyId = (queueId: string, account: string) => `${queueId}:${digest(account)}`;
  /** Set once the copy is settled: filed, returned or dropped. Any value means "done". */
  const markerKey = (queueId: string, account: string) => `delivered:${copyId(queueId, account)}`;
  /**
   * Set before the file is written. A key of its own, not a value of `delivered:`: a
   * version that counts any `delivered:` key as done (a rolling upgrade, a rollback)
   * would otherwise skip a copy whose writer died mid-write.
   */
  const writingKey = (queueId: string, account: string) => `delivering:${copyId(queueId, account)}`;
  /** Set once a recipient gone since acceptance is returned to the sender. */
  const goneKey = (queueId: string, rcpt: string) => markerKey(queueId, `gone:${rcpt}`);
  /** Set once a delay warning named a deferred recipient (warnDelayed). */
  const warnedKey = (queueId: string, rcpt: string) => markerKey(queueId, `warned:${rcpt}`);
  /** Set once a recipient deferred past MAXIMAL_QUEUE_LIFETIME is returned to the sender. */
  const expiredKey = (queueId: string, rcpt: string) => markerKey(queueId, `expired:${rcpt}`);
  /** Which run returns a recipient to the sender now (returnOnce). */
  const returning = new Claims(redis, deps.returnClaimMs ?? RETURN_CLAIM_MS);

  /**
   * A read or write of the mail store whose file system fails (a full disk, an I/O error)
   * holds the message, like a Redis outage: the mail waits until the disk is fixed, and
   * /readyz says so meanwhile. One that fails for a reason of the one mailbox (its
   * maildir not writable) is a MailboxFault: its recipient is deferred (serve).
   */
  let storeFault: string | null = null;
  const fromStore = async <T>(queueId: string, p: Promise<T>): Promise<T> => {
    try {
      return await p;
    } catch (err) {
      if (!isStorageFault(err)) throw MailboxFault.of(err);
      if (!storeFault) logger.error({ queueId, err }, 'mail store failing, messages held until it is fixed');
      storeFault = (err as NodeJS.ErrnoException).code!;
      throw new BackendUnavailableError(`mail store: ${(err as Error).message}`, { cause: err });
    }
  };

  const announce = changeAnnouncer((ev) => {
    bus.publishEvent(EventKeys.mailboxChanged, ev).catch(() => undefined);
  }, EVENT_WINDOW_MS);

  /** A DSN to the sender (none for the null sender: a bounce never bounces). */
  const bounce = async (
    env: Envelope,
    message: Buffer,
    reports: RecipientReport[],
    willRetryUntil?: Date,
  ): Promise<void> => {
    const sent = await returnToSender(
      {
        myhostname: config.myhostname,
        original: env,
        message,
        reports,
        ...(willRetryUntil ? { willRetryUntil } : {}),
      },
      { bus, directory },
    );
    if (!sent) {
      const rcpts = reports.map((r) => r.recipient);
      logger.warn({ queueId: env.queueId, rcpts }, 'null sender: nothing returned');
      return;
    }
    (willRetryUntil ? metrics.delayWarnings : metrics.bounces).inc();
    logger.info(
      { queueId: env.queueId, dsnQueueId: sent.envelope.queueId, to: env.mailFrom },
      willRetryUntil ? 'delay warning sent' : 'bounce sent',
    );
  };

  /** Junk for recipients the policy held, the bulk folder for bulk mail, else INBOX. */
  const folderFor = (env: Envelope, via: string): string => {
    const f = env.filing;
    if (!f) return 'INBOX';
    if (junkFor(env, via)) return config.junk_folder;
    return f.bulk ? config.bulk_folder : 'INBOX';
  };

  /**
   * Files the account's copy; true when it was filed by this run (not before, not returned).
   * `forwarded`: the account's forwarding sent the message on, so it was delivered.
   */
  const fileCopy = async (
    env: Envelope,
    message: Buffer,
    account: string,
    via: string,
    forwarded = false,
  ): Promise<boolean> => {
    const folder = folderFor(env, via);
    const key = markerKey(env.queueId, account);
    const writing = writingKey(env.queueId, account);
    const ttl = recordTtl;
    /** Settles the copy: `delivered:` set and `delivering:` gone, in one round trip. */
    const settle = (value: string) => fromRedis(redis.eval(SETTLE_COPY, 2, key, writing, value, ttl));
    // one round trip for all (autopipelined). `delivering:` is set before the file is
    // written, `delivered:` after: a run that finds only the first follows one that may
    // have written the file and died (or failed to settle), and the store looks for it
    // where IMAP may have moved it since.
    const [[done, before], limit] = await fromRedis(
      Promise.all([
        redis.eval(BEGIN_COPY, 2, key, writing, ttl) as Promise<[string | null, string | null]>,
        quotas.limit(account),
      ]),
    );
    if (done !== null) {
      metrics.deliveries.inc({ result: 'duplicate' });
      logger.info({ queueId: env.queueId, account }, 'already delivered, skipped');
      return false;
    }
    const data = Buffer.concat([
      Buffer.from(returnPathHeader(env.mailFrom) + deliveredToHeader(account)),
      message,
    ]);
    const copy = {
      account,
      folder,
      data,
      queueId: env.queueId,
      recipient: account,
      receivedAt: new Date(env.receivedAt),
      rerun: before !== null,
    };
    // a copy an earlier run filed is counted in the usage already: it must not be returned
    // as over quota (nor dropped) for taking its own room
    const filedBefore = copy.rerun && (await fromStore(env.queueId, store.findCopy(copy))) !== null;
    const usage =
      limit && !filedBefore
        ? await fromStore(env.queueId, new MailAccount(store.root, account).usage(limit))
        : null;
    if (usage && usage.bytes + data.length > limit) {
      metrics.deliveries.inc({ result: 'over-quota' });
      if (junkFor(env, via) || forwarded) {
        // no DSN: the sender of spam is most likely forged (it would be backscatter), and a
        // forwarded message did reach the user
        logger.warn(
          { queueId: env.queueId, account, limit, forwarded },
          'mailbox over quota, copy not kept, nothing returned',
        );
        await settle('dropped');
        return false;
      }
      // as Dovecot's LDA by default (quota_full_tempfail = no): the copy is returned to
      // the sender with 5.2.2 at once; the other recipients still get theirs
      logger.warn({ queueId: env.queueId, account, limit }, 'mailbox over quota, returned to the sender');
      await bounce(env, message, [
        {
          recipient: via,
          action: 'failed',
          status: '5.2.2',
          diagnostic: `552 5.2.2 Mailbox full: ${via} is over its storage quota`,
          remoteMta: null,
        },
      ]);
      await settle('bounced');
      return false;
    }
    const res = await fromStore(env.queueId, store.deliver(copy));
    // a write is what failed (a read may work on a full disk)
    if (storeFault) logger.info({ queueId: env.queueId, was: storeFault }, 'mail store writable again');
    storeFault = null;
    // a folder delivery made (Junk before the first login, the bulk folder) is subscribed,
    // as Dovecot's lda_mailbox_autosubscribe: clients showing only subscribed folders
    // would hide the mail in it
    if (res.createdFolder && folder.toUpperCase() !== 'INBOX')
      await fromStore(env.queueId, new MailAccount(store.root, account).subscribe(folder));
    await settle('1');
    metrics.deliveries.inc({ result: res.written ? 'written' : 'duplicate' });
    metrics.latency.observe((Date.now() - Date.parse(env.receivedAt)) / 1000);
    logger.info(
      { queueId: env.queueId, account, via, folder, path: res.path, written: res.written },
      'delivered',
    );
    announce({ v: 1, account, folder, queueId: env.queueId, at: new Date().toISOString() });
    return res.written;
  };

  const rules = accountRules({
    config,
    bus,
    directory,
    rules: new MailRules(redis),
    dkim: deps.dkim ?? null,
    logger,
    metrics,
    markerTtl: recordTtl,
  });

  /**
   * Recipients that were valid at RCPT TO and are gone now (account or alias deleted
   * since): returned to the sender with 5.1.1, as Postfix's virtual(8) does for an
   * unknown user. One DSN for all of them; a rerun does not send it again.
   */
  const returnGone = async (env: Envelope, message: Buffer, gone: string[]): Promise<void> => {
    const reports: RecipientReport[] = gone.map((rcpt) => ({
      recipient: rcpt,
      action: 'failed',
      status: '5.1.1',
      diagnostic: `550 5.1.1 <${rcpt}>: unknown user (removed after the message was accepted)`,
      remoteMta: null,
    }));
    const returned = await returnOnce(env, message, reports, goneKey);
    if (!returned.length) return;
    logger.warn(
      { queueId: env.queueId, rcpts: returned.map((r) => r.recipient) },
      'recipient no longer exists, returned to the sender',
    );
    metrics.deliveries.inc({ result: 'unknown-user' }, returned.length);
  };

  /**
   * Recipients deferred by a run of a message older than MAXIMAL_QUEUE_LIFETIME (from its
   * acceptance) are not retried (RFC 5321 §4.5.4.1): as Postfix's queue manager does, the
   * sender gets them back in one DSN, action failed with the last temporary status and
   * the reason they waited for. `age`: the message's, in ms.
   */
  const returnExpired = async (
    env: Envelope,
    message: Buffer,
    deferred: Map<string, Deferral>,
    age: number,
  ): Promise<void> => {
    const reports = deferralReports(
      deferred,
      [...deferred.keys()],
      'failed',
      ` (message expired after ${Math.round(age / 3_600_000)} hours in the queue)`,
    );
    const returned = await returnOnce(env, message, reports, expiredKey);
    if (!returned.length) return;
    logger.warn(
      { queueId: env.queueId, rcpts: returned.map((r) => r.recipient), ageMs: age },
      'deferred past MAXIMAL_QUEUE_LIFETIME, given up',
    );
    metrics.deliveries.inc({ result: 'expired' }, returned.length);
  };

  /**
   * Returns the reports not returned before to the sender, in one DSN (none for the null
   * sender; a delay warning with `willRetryUntil`), and records each (`key`), so that a
   * rerun does not send it again. The reports returned now.
   *
   * Two runs may return the same recipient at once: a run killed between its retry's
   * confirm and its message's ack leaves two retries of the same recipients, which fall
   * due together. So each recipient is claimed before its DSN is sent (`returning:`, for
   * RETURN_CLAIM_MS) and recorded as returned after: a run that finds another's claim
   * waits until that one has recorded it (nothing left to do) or its claim has lapsed (it
   * died before its DSN was confirmed: this one sends it). A claim never outlives a dead
   * run, so no DSN is lost for it. The claim is a key of its own, as `delivering:` is, so
   * that a version that reads only the record never takes a claim for a DSN sent.
   *
   * A delay warning does not wait: its message is retried anyway, so another's claim is
   * left to the next retry rather than holding this run for up to RETURN_CLAIM_MS. The
   * claims are released only once the records are written; a DSN sent whose record
   * could not be written is logged as such and returned, its claims kept until they
   * lapse, so that no other run sends it again before then.
   */
  const returnOnce = async (
    env: Envelope,
    message: Buffer,
    reports: RecipientReport[],
    key: (queueId: string, rcpt: string) => string,
    willRetryUntil?: Date,
  ): Promise<RecipientReport[]> => {
    const record = (r: RecipientReport) => key(env.queueId, r.recipient);
    const returned = await returning.once(reports, {
      claim: (r) => record(r).replace(/^delivered:/, 'returning:'),
      record,
      recorded: { value: 'bounced', seconds: recordTtl },
      // another run's claim: looked at again once it has sent its DSN, or died; a delay
      // warning's is left to the next retry
      wait: !willRetryUntil,
      send: (due) => bounce(env, message, due, willRetryUntil),
      log: logger.child({ queueId: env.queueId }),
    });
    switch (returned.kind) {
      case 'done':
        return returned.sent;
      case 'unrecorded':
        logger.error(
          { queueId: env.queueId, rcpts: returned.sent.map((r) => r.recipient), err: returned.err },
          `${willRetryUntil ? 'delay warning' : 'bounce'} sent but not recorded: a run after its claim lapses sends it again`,
        );
        return returned.sent;
      case 'unclaimed':
        return fromRedis(Promise.reject(returned.err as Error));
      case 'unsent':
        throw returned.err;
    }
  };

  /**
   * How far each recipient's external targets were queued before, as its progress record
   * says (`forward-progress:<qid>`, HASH recipient → the last target queued for it,
   * sorted, and a digest of its targets up to there when that was written): every target
   * of the recipient that sorts at or before it has been queued, and `sure` when the
   * recipient's targets up to there are those of the digest (its alias has not changed
   * below it since). For the recipients no run of this version has recorded yet (a
   * message in flight through an upgrade), the version before's `forwarded-upto:<qid>`,
   * one record for the whole message: written against the last target of a run, it may
   * reach past targets that were not its recipient's, so never sure. One round trip.
   * `targetsOf`: each recipient's external targets, sorted.
   *
   * `queuedBefore`: the targets queued for recipients of the message this run is not for
   * (queuedForOthers).
   */
  const forwardProgress = async (
    env: Envelope,
    targetsOf: Map<string, string[]>,
  ): Promise<{ progress: Map<string, Progress>; queuedBefore: Set<string> }> => {
    const [own, upto] = await fromRedis(
      Promise.all([redis.hgetall(progressKey(env.queueId)), redis.get(`forwarded-upto:${env.queueId}`)]),
    );
    const progress = new Map<string, Progress>();
    for (const [rcpt, targets] of targetsOf) {
      const record = own[rcpt];
      const found = [
        record === undefined ? null : readRecord(record, targets),
        upto == null ? null : { upto, sure: false },
      ].filter((p) => p !== null);
      if (found.length)
        progress.set(
          rcpt,
          found.reduce((a, b) => (b.upto > a.upto ? b : a)),
        );
    }
    return { progress, queuedBefore: await queuedForOthers(env, own) };
  };

  /**
   * The targets queued for the recipients of the message that this run is not for: a
   * retry carries only the recipients deferred (scheduleRetry), and a target they share
   * with one served before (an alias nested in the deferred one, a member of both) was
   * queued then. Each of those with a sure record (`records`: forward-progress) is
   * expanded again, and its targets up to its record count as queued. One whose alias
   * changed below its record since, or that cannot be expanded now, vouches for none: a
   * rare duplicate rather than a member who never gets the message.
   */
  const queuedForOthers = async (env: Envelope, records: Record<string, string>): Promise<Set<string>> => {
    const ours = new Set(env.recipients);
    const others = Object.entries(records).filter(([rcpt, value]) => !ours.has(rcpt) && value.includes('\n'));
    const queued = new Set<string>();
    await Promise.all(
      others.map(async ([rcpt, value]) => {
        const x = await directory.expand(rcpt).catch((err: unknown) => {
          if (err instanceof AliasExpansionError) return null;
          throw err;
        });
        if (!x) return;
        const targets = [...new Set(x.remote)].sort();
        const p = readRecord(value, targets);
        if (p.sure) for (const t of targets) if (t <= p.upto) queued.add(t);
      }),
    );
    return queued;
  };

  /**
   * Passes the alias targets outside our domains to outbound under the message's own
   * queue id (the relay's per-recipient records and the log lines follow it), in as many
   * messages as their envelopes need: a message's envelope travels in its headers, which
   * cannot grow past 64 KiB (envelopeParts). `remoteOf`: the external targets of each
   * recipient that expanded in this run.
   *
   * A target is queued once per message, whichever recipients expand in which run (a
   * recipient over ALIAS_EXPANSION_LIMIT expands in a later run, or not at all): each
   * recipient keeps its own progress (forwardProgress), and the targets go in sorted
   * order; once the broker has confirmed a message, each recipient's record moves to its
   * own last target in it, before the next is published. A record claims only targets of
   * its recipient: moved to the last target of the message instead, it would cover a
   * member added to the alias later that another recipient has led to since acceptance,
   * and that recipient would never get it (pendingTargets says which count as queued).
   * A retry, which carries the deferred recipients only, skips the targets the others'
   * records cover too (queuedForOthers).
   * So a rerun (a later message refused, the process killed, a recipient deferred)
   * queues only what was not queued (but when Redis fails between the confirm and the
   * record: the rerun queues that message again, as a forward's marker). One short value
   * per recipient, where a record per target would keep thousands of addresses for each
   * message to a big list.
   */
  const forwardRemote = async (
    env: Envelope,
    body: Buffer,
    remoteOf: Map<string, string[]>,
  ): Promise<void> => {
    const targetsOf = new Map([...remoteOf].map(([rcpt, ts]) => [rcpt, [...new Set(ts)].sort()]));
    const { progress, queuedBefore } = await forwardProgress(env, targetsOf);
    const pending = pendingTargets(targetsOf, progress).filter((t) => !queuedBefore.has(t));
    if (!pending.length) {
      logger.info({ queueId: env.queueId }, 'remote targets queued before, skipped');
      return;
    }
    // the filing verdict is for our own users' copies, and its list of them could take as
    // much room as the recipients
    const { filing: _filing, ...rest } = env;
    const parts = envelopeParts(pending);
    for (const [i, recipients] of parts.entries()) {
      await bus.publishMail(RoutingKeys.outbound, body, {
        ...rest,
        recipients,
        attempts: 0,
        lastError: null,
      });
      // each recipient's own targets up to the last one queued are queued now (a record
      // found further on stays)
      const last = recipients.at(-1)!;
      const records: Record<string, string> = {};
      for (const [rcpt, targets] of targetsOf) {
        const upto = targets.findLast((t) => t <= last);
        const was = progress.get(rcpt);
        if (upto === undefined || (was && was.upto >= upto)) continue;
        // one not sure stays so: targets before it may have been skipped for it
        records[rcpt] = !was || was.sure ? sureRecord(targets, upto) : upto;
      }
      if (Object.keys(records).length) {
        const key = progressKey(env.queueId);
        await fromRedis(redis.eval(RECORD_PROGRESS, 1, key, recordTtl, ...Object.entries(records).flat()));
      }
      logger.info(
        { queueId: env.queueId, rcpts: recipients, part: i + 1, parts: parts.length },
        'forwarded to outbound',
      );
    }
    metrics.forwarded.inc();
  };

  const handle = async (env: Envelope, d: Delivery): Promise<void> => {
    try {
      await deliver(env, d.body);
    } catch (err) {
      // the directory could not say where the mail goes: hold it, never guess
      if (err instanceof DirectoryUnavailableError) throw new BackendUnavailableError(err.message);
      throw err;
    }
  };

  /**
   * The recipient's expansion, or why it is deferred: its aliases expand to more than
   * ALIAS_EXPANSION_LIMIT addresses or nest too deep. As Postfix's cleanup
   * ("unreasonable virtual_alias_maps map expansion size ... deferring delivery"): none
   * of it is delivered, and the log line names it and the count, for the operator to fix
   * the alias or raise the limit.
   */
  const expandOrDefer = async (env: Envelope, rcpt: string): Promise<Expansion | Deferral> => {
    try {
      return await directory.expand(rcpt);
    } catch (err) {
      if (!(err instanceof AliasExpansionError)) throw err;
      const x = err.exceeded;
      metrics.deliveries.inc({ result: 'alias-expansion' });
      logger.warn(
        { queueId: env.queueId, rcpt, status: '4.6.0', ...x },
        x.kind === 'size'
          ? `unreasonable alias expansion size for ${rcpt}: ${x.reached} addresses, ALIAS_EXPANSION_LIMIT is ${x.limit} -- deferring delivery`
          : `unreasonable alias nesting for ${rcpt}: deeper than ${x.limit} levels -- deferring delivery`,
      );
      return { status: '4.6.0', reason: `Alias expansion error: ${err.message}` };
    }
  };

  const deliver = async (env: Envelope, body: Buffer): Promise<void> => {
    // back from a delay queue: its entry in the index goes (the queue id's other parts,
    // the relay's, keep theirs)
    if (env.attempts > 0 || env.lastError !== null)
      await fromRedis(index.remove(env.queueId, env.recipients));
    /** Each account, and the recipient its copy is filed for (the first that led to it). */
    const local = new Map<string, string>();
    /** Each account, and every recipient that led to it. */
    const ledBy = new Map<string, string[]>();
    const remoteOf = new Map<string, string[]>();
    const gone: string[] = [];
    const deferred = new Map<string, Deferral>();
    for (const rcpt of env.recipients) {
      const x = await expandOrDefer(env, rcpt);
      if ('status' in x) {
        deferred.set(rcpt, x);
        continue;
      }
      if (!x.local.length && !x.remote.length) gone.push(rcpt);
      for (const l of x.local) {
        if (!local.has(l.account)) local.set(l.account, rcpt);
        ledBy.set(l.account, [...(ledBy.get(l.account) ?? []), rcpt]);
      }
      if (x.remote.length) remoteOf.set(rcpt, x.remote);
    }
    try {
      // every recipient that led to a mailbox not written is retried: the one its copy
      // was filed for may no longer lead there at the retry (the alias changed, or gone)
      for (const [account, why] of await serve(env, body, local, remoteOf, gone))
        for (const rcpt of ledBy.get(account)!) if (!deferred.has(rcpt)) deferred.set(rcpt, why);
    } catch (err) {
      // a run that fails may be the message's last before the dead-letter queue (one
      // held for a backend is not: it is run again once the backend answers)
      if (!(err instanceof BackendUnavailableError || err instanceof DirectoryUnavailableError))
        await keepRecords(env.queueId, [...local.keys()], gone);
      throw err;
    }
    if (!deferred.size) return;
    // the others are done; what they did must stay on record until the deferred are
    await keepRecords(env.queueId, [...local.keys()], gone);
    const age = Date.now() - Date.parse(env.receivedAt);
    if (age >= config.maximal_queue_lifetime) return returnExpired(env, body, deferred, age);
    await scheduleRetry(env, body, deferred);
    await warnDelayed(env, body, deferred, age);
  };

  /**
   * Postfix's delay_warning_time: once a deferred recipient's message is DELAY_WARNING_TIME
   * old, its sender is told that it is still being retried, and until when; once for each
   * recipient, whichever run gets there first. Claimed, sent, then recorded, as the DSNs
   * of returnOnce are: a run that dies between its claim and the DSN's confirm leaves a
   * claim that lapses, and the next run sends the warning; a run that finds another's
   * claim does not wait for it, the next retry looks again. The retry is queued already:
   * a warning that cannot be sent now is logged and given back to the next run, never
   * fails this one, which would queue the retry twice.
   */
  const warnDelayed = async (
    env: Envelope,
    message: Buffer,
    deferred: Map<string, Deferral>,
    age: number,
  ): Promise<void> => {
    const warnAfter = config.delay_warning_time;
    if (!warnAfter || age < warnAfter || env.mailFrom === '') return;
    try {
      await returnOnce(
        env,
        message,
        deferralReports(deferred, [...deferred.keys()], 'delayed'),
        warnedKey,
        new Date(Date.parse(env.receivedAt) + config.maximal_queue_lifetime),
      );
    } catch (err) {
      logger.warn({ queueId: env.queueId, err }, 'delay warning not sent, it waits for the next retry');
    }
  };

  /**
   * Sends the recipients deferred by a run (`deferred`) back through a delay queue, as the
   * relay does with a remote server's 4xx: one message for them all, under the queue id
   * and arrival of the original, with one more attempt and why as its lastError, to
   * `delivery.retry.<d>` of DELIVERY_RETRY_SCHEDULE. It comes back to `delivery` then,
   * where each copy, DSN and forward done before is skipped by its record. The publish is
   * confirmed before the handler returns and the bus acks the message; nothing after it
   * fails the run, which would publish it twice.
   */
  const scheduleRetry = async (
    env: Envelope,
    body: Buffer,
    deferred: Map<string, Deferral>,
  ): Promise<void> => {
    const attempts = env.attempts + 1;
    const delay = schedule[Math.min(attempts - 1, schedule.length - 1)]!;
    const recipients = [...deferred.keys()];
    const lastError = [...deferred.values()]
      .map((d) => `${d.status} ${d.reason}`)
      .join('; ')
      .slice(0, 1000);
    await bus.publishDelayed(delay, body, { ...env, recipients, attempts, lastError }, RoutingKeys.delivery);
    metrics.retries.inc();
    await index
      .add({
        queueId: env.queueId,
        mailFrom: env.mailFrom,
        recipients,
        attempts,
        lastError,
        receivedAt: env.receivedAt,
        nextTry: new Date(Date.now() + delay).toISOString(),
        queue: delayQueue(RoutingKeys.delivery, delay),
        size: body.length,
      })
      .catch((err: unknown) =>
        logger.warn({ queueId: env.queueId, err }, 'could not index the deferred message'),
      );
    logger.info(
      { queueId: env.queueId, rcpts: recipients, attempts, delayMs: delay, reason: lastError },
      'retry scheduled',
    );
  };

  /**
   * Files, returns and forwards what the recipients expanded to (`deliver`). Each step
   * done before is skipped by its record. The accounts whose mailbox could not be
   * written to, and why, are returned, for their recipients to be deferred.
   */
  const serve = async (
    env: Envelope,
    body: Buffer,
    local: Map<string, string>,
    remoteOf: Map<string, string[]>,
    gone: string[],
  ): Promise<Map<string, Deferral>> => {
    // every copy's run ends before the message is run again: a rerun overlapping a copy
    // still being written or forwarded would write or forward it twice
    const copies = [...local];
    const runs = await Promise.allSettled(
      copies.map(async ([account, via]) => {
        const own = await rules.read(account);
        const fwd = own.forwarding
          ? await rules.forward(env, body, account, via, own.forwarding.targets)
          : null;
        // forwarded without a copy: the forward is the delivery (a loop or spam is filed).
        // But mail with the null sender is kept too: a forward of it that fails is returned
        // to no one, and it may be the bounce of an earlier forward, on its way back to the
        // target that refused it
        const keep = !!own.forwarding?.keepCopy || env.mailFrom === '';
        const filed =
          fwd === 'forwarded' || fwd === 'done-before'
            ? keep && (await fileCopy(env, body, account, via, true))
            : await fileCopy(env, body, account, via);
        if (filed || (fwd === 'forwarded' && !keep)) await rules.afterFiling(env, body, account, via, own);
      }),
    );
    const failed = runs.find((r) => r.status === 'rejected' && !(r.reason instanceof MailboxFault));
    if (failed?.status === 'rejected') throw failed.reason;
    // as Postfix's virtual(8) defers a maildir it cannot write (4.2.0): the recipients that
    // led to it are retried on the schedule, the other copies are kept
    const deferred = new Map<string, Deferral>();
    for (const [i, run] of runs.entries()) {
      if (run.status === 'fulfilled') continue;
      const [account, via] = copies[i]!;
      const fault = run.reason as MailboxFault;
      metrics.deliveries.inc({ result: 'mailbox-unavailable' });
      logger.warn(
        { queueId: env.queueId, account, rcpt: via, status: '4.2.0', err: fault.cause },
        `mailbox of ${account} cannot be written (${fault.code}) -- deferring delivery`,
      );
      deferred.set(account, { status: '4.2.0', reason: `Mailbox unavailable: ${fault.message}` });
    }
    if (gone.length) await returnGone(env, body, gone);
    if (remoteOf.size) await forwardRemote(env, body, remoteOf);
    return deferred;
  };

  /**
   * The records of what a message's runs have done live DELIVERY_DEDUPE_TTL from its last
   * run that failed or deferred recipients, not from the run that wrote them: a message
   * that failed waits in the dead-letter queue until an operator moves it back (a
   * mailbox's permissions repaired), days later maybe, and it may fail and wait again; one
   * whose recipients are deferred comes back on DELIVERY_RETRY_SCHEDULE. A record gone by
   * then would file, return or forward that part a second time. One round trip.
   */
  const keepRecords = async (queueId: string, accounts: string[], gone: string[]): Promise<void> => {
    const keys = [
      ...accounts.flatMap((a) => [markerKey(queueId, a), writingKey(queueId, a), forwardedKey(queueId, a)]),
      ...gone.map((rcpt) => goneKey(queueId, rcpt)),
      progressKey(queueId),
      `forwarded-upto:${queueId}`,
    ];
    await fromRedis(Promise.all(keys.map((k) => redis.expire(k, recordTtl))));
  };

  return {
    readiness: [{ name: 'mail-store', ok: () => storeFault === null }],
    async start() {
      // declared now if the broker is there, else at connect, and at every reconnect; a
      // retry published to a delay queue the broker lost declares it again itself
      await bus
        .declareQueues(delayQueues)
        .catch((err: unknown) => logger.warn({ err }, 'cannot declare the delay queues yet'));
      // for `mailyard queue retry --all` and the console, which need not know the schedule
      await index
        .addDelayQueues(delayQueues.map((q) => q.name))
        .catch((err: unknown) => logger.warn({ err }, 'cannot record the delay queues yet'));
      // envelopes are validated by the bus (a bad one is dead-lettered as poison)
      await bus.consumeMail(
        MailMessages.delivery,
        async (env, d) => {
          try {
            await handle(env, d);
          } catch (err) {
            metrics.failures.inc();
            throw err;
          }
        },
        { prefetch: config.delivery_prefetch, maxAttempts: config.delivery_max_attempts },
      );
      // the service's one ready line at info follows (runtime's runMain)
      logger.debug({ root: store.root, schedule: delayQueues.map((q) => q.name) }, 'delivery consuming');
    },
    async stop() {
      // copies finished while the bus drains are announced at once, not in a window
      // whose end would come after the connection is gone
      announce.close();
      await bus.stop();
    },
  };
}

/** The DSN's report of each of `rcpts`, deferred for the reason `deferred` gives, and `note`. */
function deferralReports(
  deferred: Map<string, Deferral>,
  rcpts: string[],
  action: 'failed' | 'delayed',
  note = '',
): RecipientReport[] {
  return rcpts.map((rcpt) => {
    const why = deferred.get(rcpt)!;
    return {
      recipient: rcpt,
      action,
      status: why.status,
      diagnostic: `${why.status} ${why.reason}${note}`,
      remoteMta: null,
    };
  });
}

/**
 * Why a recipient cannot be served now: its RFC 3463 status and the reason, which the log,
 * the retry's lastError and, once it expires, the DSN give.
 */
interface Deferral {
  status: string;
  reason: string;
}

/**
 * A mailbox the store cannot file a copy into for a reason of its own, not of the whole
 * file system (EACCES or EPERM on a maildir restored with the wrong owner, ENOTDIR or
 * EEXIST for a file where it has a directory, EBUSY: see isStorageFault): an error with
 * an errno code. Held in place, such a message would never leave; failed, it would be
 * dead-lettered within seconds.
 */
class MailboxFault extends Error {
  override readonly name = 'MailboxFault';
  private constructor(
    readonly code: string,
    cause: unknown,
  ) {
    super(`the mailbox cannot be written to (${code})`, { cause });
  }

  /**
   * `err` as a MailboxFault when the file system refuses this mailbox; else `err` itself
   * (Node's own ERR_* codes are a fault of the code, for the dead-letter queue and
   * someone to look at, not a reason to retry for days).
   */
  static of(err: unknown): unknown {
    const code = (err as NodeJS.ErrnoException | null)?.code;
    return code && MAILBOX_FAULTS.has(code) ? new MailboxFault(code, err) : err;
  }
}

/** The file system refusing one mailbox: its owner, its mode, its shape, a lock. */
const MAILBOX_FAULTS = new Set([
  'EACCES',
  'EPERM',
  'ENOTDIR',
  // mkdir's answer when a file holds the name of its tmp/, new/ or cur/
  'EEXIST',
  'EISDIR',
  'EBUSY',
  'EAGAIN',
  'ELOOP',
  'ENAMETOOLONG',
]);

/** How far each recipient's external targets were queued to outbound (`forwardProgress`). */
const progressKey = (queueId: string) => `forward-progress:${queueId}`;

/**
 * A recipient's progress: every one of its targets sorting at or before `upto` was queued
 * to outbound; `sure`: its targets up to there are the ones it had when they were.
 */
interface Progress {
  upto: string;
  sure: boolean;
}

/**
 * The record of a recipient whose targets (sorted) up to `upto` are all queued: the
 * address, a newline, and a digest of those targets. The address first: the version
 * before reads the whole value as the address, and a newline sorts before any character
 * an address may hold (RFC 5321 §4.1.2), so it compares as the address alone.
 */
const sureRecord = (targets: string[], upto: string): string =>
  `${upto}\n${digest(targets.filter((t) => t <= upto).join('\n'))}`;

/** A `forward-progress:` value, `targets` the recipient's now (sorted). */
function readRecord(value: string, targets: string[]): Progress {
  const nl = value.indexOf('\n');
  // without a digest: a record of the version before, or one not sure (sureRecord)
  if (nl < 0) return { upto: value, sure: false };
  const upto = value.slice(0, nl);
  return { upto, sure: sureRecord(targets, upto) === value };
}

/**
 * The targets still to queue (sorted), of the recipients' (`targetsOf`, each sorted).
 * A target a sure record covers was queued (it was among that recipient's targets then).
 * One that only records not sure cover may be a member added to an alias since they were:
 * skipped when every recipient leading to it has passed it (as Postfix expands an alias
 * once, a member added later does not get the message), queued when one has not (a
 * recipient deferred, say, whose alias held it since acceptance). A rare duplicate (an
 * alias changed below its record, sharing a member with one deferred) rather than a
 * recipient's member never getting the message.
 */
function pendingTargets(targetsOf: Map<string, string[]>, progress: Map<string, Progress>): string[] {
  const queued = new Set<string>();
  const open = new Set<string>();
  for (const [rcpt, targets] of targetsOf) {
    const p = progress.get(rcpt);
    for (const t of targets)
      if (p === undefined || t > p.upto) open.add(t);
      else if (p.sure) queued.add(t);
  }
  return [...open].filter((t) => !queued.has(t)).sort();
}

const digest = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 16);

/**
 * How long a claim to return a recipient to the sender holds without being renewed
 * (returnOnce). Its run renews it every third of it while the DSN's publish waits (as long
 * as a resource alarm keeps the broker from reading it), so only a run that died (or lost
 * Redis) lets it lapse.
 */
const RETURN_CLAIM_MS = 60_000;

/** Changes to one folder within this window are announced together. */
const EVENT_WINDOW_MS = 100;

/**
 * `mailbox.changed` at most once per folder per window: the first change is announced
 * at once, the later ones of the window in one event at its end. An IDLE client still
 * hears of every new message within the window, and a burst into one mailbox costs one
 * event per window instead of one per message.
 */
function changeAnnouncer(publish: (ev: MailboxChanged) => void, windowMs: number) {
  const windows = new Map<string, { pending: MailboxChanged | null; timer: NodeJS.Timeout }>();
  const close = (key: string) => {
    const w = windows.get(key);
    if (!w) return;
    if (!w.pending) {
      windows.delete(key);
      return;
    }
    publish(w.pending);
    w.pending = null;
    w.timer = setTimeout(() => close(key), windowMs).unref();
  };
  let closed = false;
  const announce = (ev: MailboxChanged) => {
    if (closed) return publish(ev);
    const key = `${ev.account}\0${ev.folder}`;
    const w = windows.get(key);
    if (w) {
      w.pending = ev;
      return;
    }
    publish(ev);
    windows.set(key, { pending: null, timer: setTimeout(() => close(key), windowMs).unref() });
  };
  announce.close = () => {
    closed = true;
    for (const [key, w] of windows) {
      clearTimeout(w.timer);
      if (w.pending) publish(w.pending);
      windows.delete(key);
    }
  };
  return announce;
}
