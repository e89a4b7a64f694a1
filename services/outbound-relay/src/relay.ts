import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import type { Redis } from 'ioredis';
import {
  BackendUnavailableError,
  BusUnavailableError,
  holdOnFailure,
  outboundDelayQueueSpec,
  type Bus,
  type Delivery,
} from '@mailyard/bus';
import { MailMessages, Queues, outboundDelayQueue, type Envelope } from '@mailyard/contracts';
import type { MailResolver } from '@mailyard/dns';
import type { Logger, Registry } from '@mailyard/observability';
import { Claims } from '@mailyard/queue-admin/claims';
import { DeferredIndex } from '@mailyard/queue-admin/deferred-index';
import { addressLiteral, applyHeaderEdits, domainOf } from '@mailyard/smtp-core';
import { parseRelayhost, type OutboundRelayConfig } from './config.js';
import { ConnectionCache } from './connection-cache.js';
import { TlsSessionCache } from './tls-sessions.js';
import {
  attemptDelivery,
  sessionKeysFor,
  type ParkedSession,
  type RecipientOutcome,
  type SevenBitCopy,
  type TlsPolicy,
} from './deliver.js';
import { DestinationLimits } from './destination-limits.js';
import { returnToSender, type RecipientReport } from '@mailyard/dsn';
import { createMetrics } from './metrics.js';
import { OTHER, TopDomains } from './domain-labels.js';
import { routeDomain, routeHost, type Target } from './mx.js';
import { MtaSts, httpsPolicyFetcher, mxMatches, type PolicyFetcher } from './mta-sts.js';
import { retireLegacyDelayQueues } from './legacy-queues.js';
import { ownAddressCheck } from './own-addresses.js';

/**
 * Header fields for use at home, removed before mail leaves: what the policy service adds
 * for local filing, and what the webmail writes into a draft only (the message a reply
 * answers, by folder and UID), which a desktop client sending that draft would pass on.
 */
const INTERNAL_HEADERS = [
  { name: 'X-Mailyard-Policy' },
  { name: 'X-Mailyard-Bulk' },
  { name: 'X-Mailyard-Draft' },
  { name: 'X-Mailyard-Origin' },
];

/**
 * How long a run's claim on a recipient (sendingKey) holds without being renewed. A run
 * renews its claims every third of it while it lives, so only a run that died (or lost
 * Redis) lets them lapse; its recipients then wait that long, and a retry delay, before
 * another run sends to them.
 */
export const SENDING_CLAIM_MS = 15_000;

/**
 * How long a run's claim on the delay warning naming a recipient holds without being
 * renewed. The run renews it every third of it while the warning's publish waits (as long
 * as a resource alarm keeps the broker from reading it), so only a run that died (or lost
 * Redis) lets it lapse.
 */
export const WARNING_CLAIM_MS = 60_000;

export interface OutboundRelayDeps {
  bus: Bus;
  redis: Redis;
  resolver: MailResolver;
  /** Decides where a bounce goes: local senders get it through `delivery`. */
  directory: { isLocalDomain(domain: string): Promise<boolean> };
  logger: Logger;
  registry: Registry;
  /** MTA-STS policy fetcher; the default fetches over HTTPS (tests pass a local one). */
  mtaStsFetcher?: PolicyFetcher;
  now?: () => number;
}

export interface OutboundRelay {
  start(): Promise<void>;
  stop(): Promise<void>;
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 16);

/**
 * MTA (sending): competing consumers on `outbound`. Each message is grouped by
 * recipient domain, routed (MX, MTA-STS, relayhost) and delivered; the remote verdict
 * per recipient decides: delivered, deferred (back through a delay queue with the
 * attempt count and the last error) or bounced (one DSN to the sender). The message is
 * acked only after every retry and DSN publish is confirmed. Redelivery is harmless:
 * recipients that were delivered or bounced are remembered in Redis per queue id.
 */
export function buildOutboundRelay(config: OutboundRelayConfig, deps: OutboundRelayDeps): OutboundRelay {
  const { bus, redis, resolver, logger, directory } = deps;
  const now = deps.now ?? Date.now;
  const schedule = config.outbound_retry_schedule;
  const delayQueues = [...new Set(schedule)].map(outboundDelayQueueSpec);
  const index = new DeferredIndex(redis);
  const limits = new DestinationLimits(redis, {
    concurrency: config.default_destination_concurrency_limit,
    ratePerMinute: config.default_destination_rate_limit,
  });
  const ca = config.smtp_tls_ca_file
    ? [...rootCertificates, readFileSync(config.smtp_tls_ca_file, 'utf8')]
    : undefined;
  const relayhost = parseRelayhost(config.relayhost, config.outbound_port);
  const isOwnAddress = ownAddressCheck({
    inetInterfaces: config.inet_interfaces,
    proxyInterfaces: config.proxy_interfaces,
    bindAddresses: [config.smtp_bind_address, config.smtp_bind_address6].filter(Boolean),
  });
  const tlsSessions = new TlsSessionCache();
  const sessions = new ConnectionCache({
    idleMs: config.smtp_connection_cache_on_demand ? config.smtp_connection_cache_time_limit : 0,
    reuseTimeMs: config.smtp_connection_reuse_time_limit,
    reuseCount: config.smtp_connection_reuse_count_limit,
  });
  const mtaSts = new MtaSts({
    resolver,
    fetcher: deps.mtaStsFetcher ?? httpsPolicyFetcher({ resolver, ...(ca ? { ca } : {}) }),
    ignore: config.mta_sts_ignore_domains.map((d) => d.toLowerCase()),
    onError: (domain, err) => logger.info({ domain, err }, 'MTA-STS policy lookup failed'),
  });
  // What the records of settled and warned recipients must outlive: the longest a message
  // can stay queued, and the time it may wait in the dead-letter queue (a message that
  // keeps failing here, or kills its instance, goes there with its records as they are)
  const markerTtlSec = Math.max(
    Math.ceil(config.maximal_queue_lifetime / 1000) + 86_400,
    Math.ceil(config.outbound_dedupe_ttl / 1000),
  );

  /** Ready messages in `outbound` and each delay queue of the schedule (those declared). */
  const queueDepth = async (): Promise<Map<string, number>> => {
    const out = new Map<string, number>();
    for (const name of [Queues.outbound, ...delayQueues.map((q) => q.name)]) {
      const info = await bus.inspectQueue(name);
      if (info) out.set(name, info.messages);
    }
    return out;
  };
  const metrics = createMetrics(deps.registry, queueDepth);
  const RESULTS = ['delivered', 'deferred', 'bounced'] as const;
  const topDomains = new TopDomains(config.metrics_top_domains, (domain) => {
    for (const result of RESULTS) metrics.attempts.remove({ result, domain });
  });
  for (const result of RESULTS) metrics.attempts.inc({ result, domain: OTHER }, 0);

  const doneKey = (queueId: string, rcpt: string) => `outbound:done:${queueId}:${sha(rcpt.toLowerCase())}`;
  /**
   * Which run sends to a recipient now. The broker gives a message whose consumer lost
   * its connection (a network blip, a missed heartbeat, a broker restart) to another
   * instance while the first may still be in the middle of its SMTP transaction, and a
   * crash between a retry's confirm and its message's ack leaves two retries that can run
   * at once. The records of settled recipients (doneKey) are written only once the remote
   * server answered, so both runs would send. A run claims each recipient it sends to, in
   * the round trip that reads those records; a run that finds a claim defers the
   * recipient to its next try instead.
   */
  const sending = new Claims(redis, SENDING_CLAIM_MS);
  const sendingKey = (queueId: string, rcpt: string) =>
    `outbound:sending:${queueId}:${sha(rcpt.toLowerCase())}`;
  const sendingKeys = (queueId: string, rcpts: string[]) => rcpts.map((r) => sendingKey(queueId, r));

  /**
   * Remembers recipients that are settled, so a redelivery skips them. After the attempt
   * this is best effort: failing the message now would send it again to those who have it.
   */
  const settle = async (log: Logger, queueId: string, rcpts: string[], how: 'delivered' | 'bounced') => {
    await sending
      .record(
        rcpts.map((r) => doneKey(queueId, r)),
        how,
        markerTtlSec,
      )
      .catch((err: unknown) => log.warn({ err, rcpts }, `Redis unavailable: ${how} not recorded`));
  };

  /** Set once a delay warning named the recipient (claimed first: warningKey). */
  const warnedKey = (queueId: string, rcpt: string) =>
    `outbound:warned:${queueId}:${sha(rcpt.toLowerCase())}`;
  /**
   * Which run sends the delay warning that names a recipient now: claimed in the round trip
   * that reads its record (warnedKey), held while the warning is published, and let go of
   * once the record is written. A run that dies in between leaves a claim that lapses
   * (WARNING_CLAIM_MS), not a record, and a later attempt sends the warning.
   */
  const warning = new Claims(redis, WARNING_CLAIM_MS);
  const warningKey = (queueId: string, rcpt: string) =>
    `outbound:warning:${queueId}:${sha(rcpt.toLowerCase())}`;

  const sendDsn = async (env: Envelope, body: Buffer, reports: RecipientReport[], willRetryUntil?: Date) => {
    const sent = await returnToSender(
      {
        myhostname: config.myhostname,
        original: env,
        message: body,
        reports,
        ...(willRetryUntil ? { willRetryUntil } : {}),
        now: new Date(now()),
      },
      // Redis failing to say where the DSN goes is an outage (BackendUnavailableError)
      { bus, directory: { isLocalDomain: (d) => holdOnFailure('Redis', directory.isLocalDomain(d)) } },
    );
    if (!sent) return;
    const kind = willRetryUntil ? 'delay' : 'failure';
    metrics.bounces.inc({ kind });
    logger.info(
      {
        queueId: env.queueId,
        dsnQueueId: sent.envelope.queueId,
        to: env.mailFrom,
        kind,
        via: sent.via,
      },
      kind === 'delay' ? 'delay warning sent' : 'bounce sent',
    );
  };

  /** Routing and TLS policy for one destination domain (or the relayhost). */
  const resolveTargets = async (
    domain: string,
  ): Promise<
    | { kind: 'targets'; targets: Target[]; tls: TlsPolicy; auth?: { user: string; pass: string } }
    | { kind: 'permanent' | 'temporary'; status: string; text: string }
  > => {
    const routeOpts = {
      port: config.outbound_port,
      families: config.inet_protocols,
      preference: config.smtp_address_preference,
      addressLimit: config.smtp_mx_address_limit,
      isOwnAddress,
    };
    if (relayhost) {
      // Postfix smtp_connect(): loop detection on the SMTP port only, never for a relayhost
      // on another port (a content filter, a second MTA on this host)
      const opts = {
        ...routeOpts,
        port: relayhost.port,
        isOwnAddress: relayhost.port === config.outbound_port ? isOwnAddress : undefined,
      };
      const route = relayhost.mx
        ? await routeDomain(resolver, relayhost.host, opts)
        : await routeHost(resolver, relayhost.host, opts);
      // a broken relayhost setting is ours to fix, not the sender's: defer, never bounce
      if (route.kind !== 'targets')
        return { ...route, kind: 'temporary', status: route.status.replace(/^5/, '4') };
      const auth = config.relayhost_username
        ? { user: config.relayhost_username, pass: config.relayhost_password }
        : undefined;
      return {
        kind: 'targets',
        targets: route.targets,
        tls: { mode: 'verify', reason: 'relayhost' },
        ...(auth ? { auth } : {}),
      };
    }
    const literal = addressLiteral(domain);
    if (literal) {
      // an address of a family we do not send over would wait for a change of settings
      if (config.inet_protocols !== 'all' && config.inet_protocols !== literal.family)
        return {
          kind: 'permanent',
          status: '5.4.4',
          text: `${domain} is an ${literal.family === 'ipv6' ? 'IPv6' : 'IPv4'} address, and this server sends over ${config.inet_protocols} only`,
        };
      // RFC 5321 §4.1.3: an address literal names the host itself; there is no MX to look up
      // and no MTA-STS policy to find (Postfix delivers to [address] without DNS)
      const route = await routeHost(resolver, literal.ip, routeOpts);
      if (route.kind !== 'targets') return route;
      return {
        kind: 'targets',
        targets: route.targets,
        tls: config.smtp_tls_opportunistic ? { mode: 'may' } : { mode: 'none' },
      };
    }
    const policy = await mtaSts.policyFor(domain);
    const enforce = policy?.mode === 'enforce';
    const route = await routeDomain(resolver, domain, {
      ...routeOpts,
      ...(enforce ? { hostFilter: (h: string) => mxMatches(h, policy.mx) } : {}),
    });
    if (route.kind !== 'targets') return route;
    const tls: TlsPolicy = enforce
      ? { mode: 'verify', reason: `MTA-STS policy of ${domain}` }
      : config.smtp_tls_opportunistic
        ? { mode: 'may' }
        : { mode: 'none' };
    return { kind: 'targets', targets: route.targets, tls };
  };

  const deliverDomain = async (
    env: Envelope,
    body: Buffer,
    sevenBit: SevenBitCopy,
    domain: string,
    rcpts: string[],
  ): Promise<RecipientOutcome[]> => {
    const all = (kind: 'deferred' | 'bounced', status: string, reason: string): RecipientOutcome[] =>
      rcpts.map((recipient) => ({ kind, recipient, status, reason, remoteMta: null }));
    const log = logger.child({ queueId: env.queueId, domain });
    const slotKey = relayhost ? `[${relayhost.host}]` : domain;
    const deadline = now() + config.destination_slot_wait;
    // a session the previous message to this destination left open comes with its slot
    const parked = sessions.take(slotKey);
    // the shared limits live in Redis: without them this destination is not tried now
    // (deferred as busy, no attempt counted), the other destinations still are
    const unavailable = (err: unknown) => {
      logger.warn({ queueId: env.queueId, destination: slotKey, err }, 'destination limits unavailable');
      return null;
    };
    const release = parked?.release ?? (await limits.acquire(slotKey, deadline).catch(unavailable));
    if (!release) return all('deferred', '4.4.5', `destination ${slotKey} busy (concurrency or rate limit)`);
    let session = parked?.session ?? null;
    let unused = session;
    let keep: ParkedSession | null = null;
    try {
      // the slot came with the session; the rate budget is still to be had
      if (parked && !(await limits.rateWait(slotKey, deadline).catch(unavailable)))
        return all('deferred', '4.4.5', `destination ${slotKey} busy (rate limit)`);
      const dest = await resolveTargets(domain);
      if (dest.kind !== 'targets')
        return all(dest.kind === 'permanent' ? 'bounced' : 'deferred', dest.status, dest.text);
      if (!session) {
        // another domain's kept session to the same server (domains hosted together):
        // this message holds its own slot, so that one's goes back
        // only for the server tried first: one that is not would be closed unused
        const other = sessions.takeMatching(
          sessionKeysFor(dest.targets.slice(0, 1), dest.tls, {
            auth: dest.auth,
            bindAddress: config.smtp_bind_address,
            bindAddress6: config.smtp_bind_address6,
          }),
        );
        if (other) {
          session = other.session;
          await other.release();
        }
      }
      unused = null; // attemptDelivery uses or closes it
      const r = await attemptDelivery(
        {
          mailFrom: env.mailFrom,
          recipients: rcpts,
          data: body,
          smtputf8: env.smtputf8,
          body: env.body,
          sevenBit,
        },
        {
          myhostname: config.myhostname,
          loopPort: config.outbound_port,
          destination: slotKey,
          relayhost: !!relayhost,
          targets: dest.targets,
          tls: dest.tls,
          ca,
          auth: dest.auth,
          connectTimeoutMs: config.smtp_connect_timeout,
          replyTimeoutMs: config.smtp_reply_timeout,
          dataXferTimeoutMs: config.smtp_data_xfer_timeout,
          dataDoneTimeoutMs: config.smtp_data_done_timeout,
          recipientLimit: config.smtp_destination_recipient_limit,
          sessionLimit: config.smtp_mx_session_limit,
          bindAddress: config.smtp_bind_address,
          bindAddress6: config.smtp_bind_address6,
          logger: log,
          parked: session,
          keepSession: sessions.enabled,
          onSession: (reused) => metrics.sessions.inc({ reused: reused ? 'yes' : 'no' }),
          tlsSessions,
          onTls: (resumed) => metrics.tlsHandshakes.inc({ resumed: resumed ? 'yes' : 'no' }),
          // remembered as each transaction is taken, not once the whole message is done:
          // an instance killed or stopped while another batch or domain is still on its
          // way must not have the next one send these a second copy
          onDelivered: (delivered) => settle(log, env.queueId, delivered, 'delivered'),
        },
      );
      keep = r.session;
      return r.outcomes;
    } catch (err) {
      // A local failure with this domain must not undo what other domains of the same
      // message already got: defer these recipients, settle the rest.
      logger.warn({ queueId: env.queueId, domain, err }, 'local error while delivering');
      return all('deferred', '4.3.0', `local error: ${(err as Error).message}`);
    } finally {
      await unused?.client.quit();
      // parked with its slot for the next message, unless mail of any instance waits for one;
      // this instance's waiters are checked again with no await before the put: one that
      // began waiting meanwhile found nothing parked, and would wait for the idle limit
      const parkedAgain =
        keep !== null &&
        !(await limits.contended(slotKey).catch(() => true)) &&
        !limits.waitingHere(slotKey) &&
        sessions.put(slotKey, { session: keep, release });
      if (!parkedAgain) {
        await keep?.client.quit();
        await release();
      }
    }
  };

  const handle = async (env: Envelope, d: Delivery): Promise<void> => {
    const log = logger.child({ queueId: env.queueId });
    // back from a delay queue: deferred after an attempt, or only because the destination
    // was busy (no attempt counted, but a lastError and an index entry all the same); its
    // entry is the one for its recipients, the queue id's other messages keep theirs
    // Before any attempt, Redis failing holds the message (the bus runs it again when
    // Redis answers): sending without knowing what was settled could send twice.
    if (env.attempts > 0 || env.lastError !== null)
      await holdOnFailure('Redis', index.remove(env.queueId, env.recipients));

    // Redelivery (a killed instance, a broker restart): skip recipients already settled,
    // and those another run is sending to (claims)
    const token = randomUUID();
    const found = await holdOnFailure(
      'Redis',
      sending.take(
        token,
        sendingKeys(env.queueId, env.recipients),
        env.recipients.map((r) => doneKey(env.queueId, r)),
      ),
    );
    const pending = env.recipients.filter((_, i) => found[i] === 'taken');
    const busy = env.recipients.filter((_, i) => found[i] === 'busy');
    if (!pending.length && !busy.length) {
      log.info('every recipient already settled, nothing to do');
      return;
    }
    try {
      await sending.holding(token, sendingKeys(env.queueId, pending), log, () =>
        send(env, d, log, pending, busy),
      );
    } finally {
      // after the records of what was settled: another run finds those, not a gap
      await sending
        .release(token, sendingKeys(env.queueId, pending))
        .catch((err: unknown) => log.warn({ err }, 'claims not released, they lapse'));
    }
  };

  /**
   * One run's work on the message: `pending`, the recipients it claimed, are sent to, and
   * `busy`, those another run is sending to, wait for the next try (no attempt counted).
   */
  const send = async (
    env: Envelope,
    d: Delivery,
    log: Logger,
    pending: string[],
    busy: string[],
  ): Promise<void> => {
    const byDomain = new Map<string, string[]>();
    for (const r of pending) {
      const domain = domainOf(r);
      byDomain.set(domain, [...(byDomain.get(domain) ?? []), r]);
    }
    // our own verdict headers are for our users' copies, not for other servers (nor for
    // the headers a DSN returns, which may go to one)
    const wire = applyHeaderEdits(d.body, { headers: [], removeHeaders: INTERNAL_HEADERS });
    // converted to 7 bit at most once, for all the domains whose servers need it
    const sevenBit: SevenBitCopy = { current: null };
    const outcomes = (
      await Promise.all(
        [...byDomain].map(([domain, rcpts]) => deliverDomain(env, wire, sevenBit, domain, rcpts)),
      )
    ).flat();

    const delivered = outcomes.filter((o) => o.kind === 'delivered');
    const bounced = outcomes.filter((o) => o.kind === 'bounced');
    let deferred = outcomes.filter((o) => o.kind === 'deferred');
    for (const o of outcomes) {
      metrics.attempts.inc({ result: o.kind, domain: topDomains.label(domainOf(o.recipient)) });
      switch (o.kind) {
        case 'delivered':
          log.info({ rcpt: o.recipient, relay: o.remoteMta, tls: o.tls, reply: o.reply }, 'delivered');
          break;
        case 'deferred':
          log.info({ rcpt: o.recipient, status: o.status, reason: o.reason }, 'deferred');
          break;
        case 'bounced':
          log.info({ rcpt: o.recipient, status: o.status, reason: o.reason }, 'bounced');
          break;
        default: {
          const never: never = o;
          throw new Error(`unexpected outcome ${String(never)}`);
        }
      }
    }
    // the delivered ones were remembered as each transaction ended (onDelivered)
    if (delivered.length) {
      metrics.latency.observe((now() - Date.parse(env.receivedAt)) / 1000);
      for (const o of delivered) metrics.connections.inc({ tls: o.tls ? 'yes' : 'no' });
    }

    // RFC 5321 §4.5.4.1: give up after the queue lifetime. RFC 3463 X.4.7 "delivery time
    // expired"; the last temporary reason goes in the diagnostic.
    const age = now() - Date.parse(env.receivedAt);
    const expired = deferred.length > 0 && age >= config.maximal_queue_lifetime;
    const failed: RecipientReport[] = bounced.map((o) => ({
      recipient: o.recipient,
      action: 'failed',
      status: o.status,
      diagnostic: o.reason,
      remoteMta: o.remoteMta,
    }));
    if (expired) {
      for (const o of deferred) {
        failed.push({
          recipient: o.recipient,
          action: 'failed',
          status: '4.4.7',
          diagnostic: `${o.reason} (message expired after ${Math.round(age / 3_600_000)} hours in the queue)`,
          remoteMta: o.remoteMta,
        });
      }
      log.info({ rcpts: deferred.map((o) => o.recipient) }, 'expired, bouncing');
      deferred = [];
    }
    // never given up while another run may still deliver them; their try is not counted
    for (const recipient of busy) {
      metrics.attempts.inc({ result: 'deferred', domain: topDomains.label(domainOf(recipient)) });
      log.info({ rcpt: recipient }, 'being sent by another run, deferred');
      deferred.push({
        kind: 'deferred',
        recipient,
        status: '4.4.5',
        reason: 'another delivery to this recipient is in progress',
        remoteMta: null,
      });
    }
    if (failed.length) {
      let returned = true;
      // RFC 5321 §4.5.5 / RFC 3464: never answer a bounce with a bounce
      if (env.mailFrom === '')
        log.info({ rcpts: failed.map((f) => f.recipient) }, 'null sender: no bounce sent');
      else {
        try {
          await sendDsn(env, wire, failed);
        } catch (err) {
          // Postfix smtp_bulk_fail(): a bounce that cannot be logged defers the recipient
          // instead. Failing the whole message here would count our own outage (Redis
          // cannot say where the bounce goes) as an attempt, and send the message again to
          // the recipients the servers took, whose record may be what Redis failed to keep.
          // Anything else (a DSN that cannot be built) fails the message as before: put
          // off, it would come back for ever.
          if (!(err instanceof BackendUnavailableError || err instanceof BusUnavailableError)) throw err;
          log.warn({ err, rcpts: failed.map((f) => f.recipient) }, 'bounce not sent, recipients deferred');
          const why = (err as Error).message;
          for (const f of failed)
            deferred.push({
              kind: 'deferred',
              recipient: f.recipient,
              status: '4.3.0',
              reason: `${f.diagnostic} (bounce not sent: ${why})`,
              remoteMta: f.remoteMta,
            });
          returned = false;
        }
      }
      if (returned)
        await settle(
          log,
          env.queueId,
          failed.map((f) => f.recipient),
          'bounced',
        );
    }

    if (deferred.length) {
      // A destination that was only busy was not tried: no attempt is counted.
      const tried = deferred.some((o) => o.status !== '4.4.5');
      const attempts = env.attempts + (tried ? 1 : 0);
      const delay = tried ? schedule[Math.min(attempts - 1, schedule.length - 1)]! : schedule[0]!;
      // a try that reached no server keeps the reason the message waits for
      const lastError =
        deferred.find((o) => o.status !== '4.4.5')?.reason ?? env.lastError ?? deferred[0]!.reason;
      const retryEnv: Envelope = {
        ...env,
        recipients: deferred.map((o) => o.recipient),
        attempts,
        lastError: lastError.slice(0, 1000),
      };
      await bus.publishDelayed(delay, d.body, retryEnv);
      await index
        .add({
          queueId: env.queueId,
          mailFrom: env.mailFrom,
          recipients: retryEnv.recipients,
          attempts,
          lastError: retryEnv.lastError,
          receivedAt: env.receivedAt,
          nextTry: new Date(now() + delay).toISOString(),
          queue: outboundDelayQueue(delay),
          size: d.body.length,
        })
        .catch((err: unknown) => log.warn({ err }, 'could not index the deferred message'));
      log.info({ attempts, delayMs: delay, rcpts: retryEnv.recipients }, 'retry scheduled');

      // Postfix's delay_warning_time: each recipient named in one warning, whichever
      // message of the queue id and instance sees it first; not those another run is
      // sending to: it may deliver them now, and it warns itself if it cannot
      if (config.delay_warning_time > 0 && env.mailFrom !== '' && age >= config.delay_warning_time)
        await warnDelayed(
          env,
          wire,
          log,
          deferred.filter((o) => !busy.includes(o.recipient)),
        );
    }
  };

  /**
   * Sends the sender one delay warning naming the `deferred` recipients no warning named
   * yet: claimed, published, then recorded and let go of, so that an instance that dies
   * before the warning is confirmed leaves it to a later attempt, never lost. The retry is
   * queued already: failing the message now would queue a second one (two copies for the
   * recipients) or dead-letter it, so a warning that cannot be sent waits for the next
   * attempt instead.
   */
  const warnDelayed = async (
    env: Envelope,
    wire: Buffer,
    log: Logger,
    deferred: Extract<RecipientOutcome, { kind: 'deferred' }>[],
  ): Promise<void> => {
    if (!deferred.length) return;
    const unavailable = (err: unknown) =>
      log.warn({ err }, 'Redis unavailable: the delay warning waits for the next attempt');
    // an earlier release's warning, one per queue id, was sent already
    const warnedBefore = await redis.exists(`outbound:warned:${env.queueId}`).catch(unavailable);
    if (warnedBefore !== 0) return;
    // per recipient, not per queue id: the several messages a queue id can stand for (an
    // alias's members outside our domains) are each deferred on their own, and the first
    // to warn would otherwise leave the others' recipients unreported
    const warned = await warning.once(deferred, {
      claim: (o) => warningKey(env.queueId, o.recipient),
      record: (o) => warnedKey(env.queueId, o.recipient),
      recorded: { value: '1', seconds: markerTtlSec },
      // the message is retried anyway
      wait: false,
      send: (due) =>
        sendDsn(
          env,
          wire,
          due.map((o) => ({
            recipient: o.recipient,
            action: 'delayed',
            status: o.status,
            diagnostic: o.reason,
            remoteMta: o.remoteMta,
          })),
          new Date(Date.parse(env.receivedAt) + config.maximal_queue_lifetime),
        ),
      log,
    });
    switch (warned.kind) {
      case 'done':
        return;
      case 'unclaimed':
        unavailable(warned.err);
        return;
      case 'unsent':
        log.warn({ err: warned.err }, 'delay warning not sent, it waits for the next attempt');
        return;
      case 'unrecorded':
        log.error(
          { err: warned.err, rcpts: warned.sent.map((o) => o.recipient) },
          'delay warning sent but not recorded: an attempt after its claim lapses sends it again',
        );
        return;
    }
  };

  let legacy: { stop(): void } | null = null;
  return {
    async start() {
      // Declared now if the broker is there, else at connect, and at every reconnect; a
      // publish to a delay queue the broker lost declares it again itself.
      await bus
        .declareQueues(delayQueues)
        .catch((err: unknown) => logger.warn({ err }, 'cannot declare the delay queues yet'));
      // for `mailyard queue retry --all` and the console, which need not know the schedule
      await index
        .addDelayQueues(delayQueues.map((q) => q.name))
        .catch((err: unknown) => logger.warn({ err }, 'cannot record the delay queues yet'));
      legacy = retireLegacyDelayQueues(bus, redis, schedule, logger);
      // envelopes are validated by the bus (a bad one is dead-lettered as poison)
      await bus.consumeMail(MailMessages.outbound, handle, {
        prefetch: config.outbound_prefetch,
        maxAttempts: config.outbound_max_attempts,
      });
      // the service's one ready line at info follows (runtime's runMain)
      logger.debug(
        {
          relayhost: config.relayhost || null,
          port: config.outbound_port,
          schedule: delayQueues.map((q) => q.name),
        },
        'outbound-relay consuming',
      );
    },
    async stop() {
      legacy?.stop();
      await bus.stop();
      await sessions.close();
    },
  };
}
