import type { AddressInfo } from 'node:net';
import type { SMTPServerSession } from 'smtp-server';
import type { Redis } from 'ioredis';
import { ClientLimits } from '@mailyard/auth';
import { BusUnavailableError, UnroutableError, within, type Bus } from '@mailyard/bus';
import { registerCertificateExpiry, tlsSourceFromConfig, MIN_TLS_VERSION } from '@mailyard/certs';
import { authservIdOf, drainTime } from '@mailyard/config';
import {
  ENVELOPE_VERSION,
  type Envelope,
  type PolicyDecision,
  type PolicyRequestInput,
} from '@mailyard/contracts';
import { Directory } from '@mailyard/directory';
import type { MailResolver } from '@mailyard/dns';
import type { Logger, ReadinessCheck, Registry } from '@mailyard/observability';
import { LocalPolicy } from '@mailyard/policy-engine';
import {
  createPolicyClient,
  defaultDecision,
  PolicyVerdicts,
  applyVerdict,
  policyReject,
  policyServiceCheck,
  type PolicyAsker,
} from '@mailyard/policy-client';
import {
  SmtpReject,
  type HeaderEdits,
  applyHeaderEdits,
  headerRefusal,
  inspectLineEndings,
  newQueueId,
  normalizeLineEndings,
  ownHeaderRemovals,
  parseMailAddress,
  receivedHeader,
  reply,
} from '@mailyard/smtp-core';
import {
  DataMemory,
  MailyardSmtpServer,
  PublishUnanswered,
  answerData,
  forwardPath,
  sessionBodyType,
  sessionHostname,
  sessionSmtpUtf8,
  sessionTls,
  type ListenerOptions,
} from '@mailyard/smtp-listener';
import type { IntakeConfig } from './config.js';
import { createIntakeMetrics } from './metrics.js';
import type { Finished, IntakeRole, ListenerSpec } from './role.js';
import { SubmissionSmtpServer } from './submission-listener.js';
import { Transactions, addRoute, envelopeHasRoom, routesOf } from './transaction.js';

export interface IntakeDeps {
  bus: Bus;
  resolver: MailResolver;
  logger: Logger;
  registry: Registry;
  /** Policy RPC client; by default one is built from the config when POLICY_ENABLED is on. */
  policy?: PolicyAsker | null;
  /** Where the per-client connection rate is counted across instances; without it, in this process. */
  redis?: Redis;
  /** The service's directory (with its lookup cache), for the stages decided here; by default an uncached one. */
  directory?: Directory;
  /**
   * Cheap stages decided in this process; by default one is built, with the built policy
   * client, when POLICY_LOCAL_DECISIONS is on and Redis is given.
   */
  localPolicy?: LocalPolicy | null;
  /** The clock of the stages decided here (greylisting); tests pass a controllable one. */
  now?: () => number;
}

export interface Intake<L extends string> {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Beyond the broker and Redis: the policy service has a consumer (with POLICY_ENABLED). */
  readiness: ReadinessCheck[];
  /** Bound ports by listener (useful with port 0); filled in by start(). */
  readonly ports: Record<L, number>;
  /** Ends session `id` with `err` (a 421), whichever listener it is on; false when there is none. */
  closeSession(id: string, err: SmtpReject): boolean;
}

/** The account a session logged in as (smtp-server's session.user, set by AUTH), or null. */
export function sessionUser(session: SMTPServerSession): string | null {
  return typeof session.user === 'string' && session.user ? session.user : null;
}

/**
 * The SMTP intake both mail-accepting services are built on: the listeners (limits,
 * deadlines, shutdown, PROXY protocol), the policy service asked at every stage, the
 * common checks, reject logging and metrics, the envelope, and one confirmed publish
 * per message: `250` only once the broker has the message, `451 4.3.0` when it cannot
 * take it (DESIGN promise 1). The role decides who may send what to whom, and how the
 * message is changed on the way.
 */
export function createIntake<L extends string>(
  config: IntakeConfig,
  role: IntakeRole<L>,
  deps: IntakeDeps,
): Intake<L> {
  const { bus, logger } = deps;
  const metrics = createIntakeMetrics(deps.registry, role.service);
  const tls = tlsSourceFromConfig(config, logger, role.service);
  registerCertificateExpiry(deps.registry, role.service, tls);
  const limit = config.message_size_limit;
  // never below the size limit: a message the size limit allows fits when it comes alone
  const dataMemory = new DataMemory(
    config.smtpd_data_memory_limit && Math.max(config.smtpd_data_memory_limit, limit),
    (held) => metrics.dataHeld(held),
  );

  // what no message keeps, whatever the policy decided: asked or not, answering or not
  // (the default action DUNNO, the circuit open), its decision read or left aside
  const ownRemovals = ownHeaderRemovals(authservIdOf(config));

  /** RCPT of a recipient already in the transaction: accepted, not added again (Postfix too). */
  const duplicateRecipient = () => Object.assign(new Error('2.1.5 Ok'), { responseCode: 250 });

  /** Counts and logs a refusal; returns it to be sent. */
  const rejectWith = (err: SmtpReject, session: SMTPServerSession, extra: Record<string, unknown> = {}) => {
    metrics.rejected(err.reason);
    logger.info(
      {
        sid: session.id,
        client: session.remoteAddress,
        user: sessionUser(session),
        reason: err.reason,
        reply: err.line,
        ...extra,
      },
      'rejected',
    );
    return err;
  };

  /**
   * Runs a stage's checks and answers: a refusal as itself, any other failure as 451 4.3.0
   * (or `failure.reply`).
   */
  const settle = (
    session: SMTPServerSession,
    cb: (err?: Error | null) => void,
    failure: { extra: Record<string, unknown>; log: string; reply?: () => SmtpReject },
    /** Resolves to an answer other than smtp-server's own (a duplicate's 250, not added). */
    checks: () => Promise<Error | void>,
  ): void =>
    void checks().then(
      (answer) => cb(answer ?? null),
      (err: unknown) => {
        if (err instanceof SmtpReject) return cb(rejectWith(err, session, failure.extra));
        logger.error({ sid: session.id, err }, failure.log);
        cb(rejectWith((failure.reply ?? reply.localError)(), session));
      },
    );

  const policy: PolicyAsker | null =
    deps.policy !== undefined
      ? deps.policy
      : config.policy_enabled
        ? createPolicyClient(role.service, config, {
            bus,
            logger,
            registry: deps.registry,
            observe: (stage, seconds, outcome) => metrics.policyLatency(stage, outcome, seconds),
          })
        : null;
  const local: LocalPolicy | null =
    deps.localPolicy !== undefined
      ? deps.localPolicy
      : policy && deps.policy === undefined && config.policy_local_decisions && deps.redis
        ? new LocalPolicy({
            redis: deps.redis,
            prefix: config.redis_prefix,
            directory: deps.directory ?? new Directory(deps.redis),
            resolver: deps.resolver,
            logger,
            registry: deps.registry,
            service: role.service,
            ...(deps.now ? { now: deps.now } : {}),
          })
        : null;
  // per session (connect verdicts) and per transaction (MAIL, RCPT verdicts)
  const verdicts = new PolicyVerdicts();
  // seconds each session waited for the policy service since its last accepted message
  const policyWaits = new WeakMap<SMTPServerSession, number>();
  /**
   * The stage decided in this process, or null. DATA's checks (SPF, DKIM, DMARC) may make
   * many lookups; they get the time the policy service would have had, and past it the
   * session gets what it would have got from the service: the default action.
   */
  const decideHere = async (
    here: LocalPolicy,
    session: SMTPServerSession,
    request: Omit<PolicyRequestInput, 'v'>,
    opts: { message?: Buffer; timeoutMs?: number },
  ): Promise<PolicyDecision | null> => {
    if (!opts.message) return here.decide(request);
    const ms = opts.timeoutMs ?? config.policy_timeout;
    const late = new AbortController();
    const timedOut = new Error(`the ${request.stage} checks took longer than ${ms} ms`);
    const decided = here.decide(request, opts.message, late.signal);
    try {
      return await within(decided, ms, () => {
        late.abort(timedOut);
        return timedOut;
      });
    } catch (err) {
      if (err !== timedOut) throw err;
      logger.warn({ sid: session.id, stage: request.stage }, 'policy checks took too long');
      const reason = { check: 'policy', result: 'timeout', detail: timedOut.message };
      return defaultDecision(config.smtpd_policy_service_default_action, reason);
    }
  };
  /**
   * A stage's decision: here when its entries are cheap, else from the policy service;
   * with `leave`, null instead of asking (the stage goes with a later request).
   */
  const decideStage = async (
    asker: PolicyAsker,
    session: SMTPServerSession,
    request: Omit<PolicyRequestInput, 'v'>,
    opts: { message?: Buffer; timeoutMs?: number; leave?: boolean } = {},
  ): Promise<PolicyDecision | null> => {
    const started = process.hrtime.bigint();
    try {
      const here = local ? await decideHere(local, session, request, opts) : null;
      if (!here && opts.leave) {
        metrics.policyDecided(request.stage, 'with-rcpt');
        return null;
      }
      metrics.policyDecided(request.stage, here ? 'local' : 'service');
      if (here) return here;
      // DATA left to the service after checks ran here (a scanner not reached): one
      // POLICY_DATA_TIMEOUT for both
      const spent = Number(process.hrtime.bigint() - started) / 1e6;
      const timeoutMs = opts.message
        ? Math.max(1, Math.round((opts.timeoutMs ?? config.policy_timeout) - spent))
        : opts.timeoutMs;
      return await asker.ask(request, opts.message, timeoutMs);
    } finally {
      const waited = Number(process.hrtime.bigint() - started) / 1e9;
      policyWaits.set(session, (policyWaits.get(session) ?? 0) + waited);
    }
  };
  /** A stage that is never left for later: always a decision. */
  const ask = async (
    asker: PolicyAsker,
    session: SMTPServerSession,
    request: Omit<PolicyRequestInput, 'v'>,
    opts: { message?: Buffer; timeoutMs?: number } = {},
  ): Promise<PolicyDecision> => (await decideStage(asker, session, request, opts))!;
  const transactions = new Transactions();
  // the SASL user travels with every request: permit_sasl_authenticated and the
  // per-user rate limits key on it
  const policyRequest = (session: SMTPServerSession, stage: PolicyRequestInput['stage']) => ({
    stage,
    origin: role.service,
    sessionId: session.id,
    client: {
      ip: session.remoteAddress,
      hostname: sessionHostname(session),
      // false before HELO/EHLO
      helo: typeof session.hostNameAppearsAs === 'string' ? session.hostNameAppearsAs : '',
    },
    user: sessionUser(session),
    sender: session.envelope.mailFrom ? session.envelope.mailFrom.address : null,
    recipients: session.envelope.rcptTo.map((r) => r.address),
    tls: !!session.secure,
  });
  /** Asks at MAIL or RCPT, unless an earlier stage accepted the transaction. */
  const askPolicy = async (
    session: SMTPServerSession,
    stage: 'mail' | 'rcpt',
    facts: Pick<PolicyRequestInput, 'sender' | 'size' | 'recipient'>,
  ) => {
    if (!policy) return;
    const st = verdicts.tx(session);
    if (st.accepted) return;
    // MAIL's lists needing the service go with the first RCPT, one request for both, when
    // the service takes them so (Postfix's smtpd_delay_reject); a RCPT refused keeps them
    // for the next one, as Postfix evaluates the sender restrictions at every RCPT
    const withMail = stage === 'rcpt' && st.mailLeft;
    const d = await decideStage(
      policy,
      session,
      { ...policyRequest(session, stage), ...facts, withMail },
      { leave: stage === 'mail' && !!local?.takesMailWithRcpt },
    );
    if (!d) {
      st.mailLeft = true;
      return;
    }
    const rej = policyReject(d, stage);
    // MAIL's lists decided: not asked again, even when this RCPT is refused by its own,
    // and their Junk verdict holds the whole message
    if (withMail && (d.mailPassed || !rej)) st.mailLeft = false;
    if (withMail && d.mailPassed === 'quarantine') st.junkAll = true;
    if (rej) throw rej;
    applyVerdict(st, d, facts.recipient ?? undefined);
  };
  const mayTransact = (session: SMTPServerSession) => {
    const refusal = role.mayTransact?.(session);
    if (refusal) throw refusal;
  };
  // the client list's verdict per session when it runs after login: passed, or refused
  // for good and kept for the session's later transactions, as a refusal at connect ends
  // the session; a deferral (a DNS list not answering) is asked again at the next MAIL
  const clientVerdicts = new WeakMap<SMTPServerSession, 'passed' | SmtpReject>();
  /** The client list of a logged-in session (role.clientRestrictions `login`). */
  const askClientAfterLogin = async (session: SMTPServerSession) => {
    if (!policy || role.clientRestrictions !== 'login') return;
    const kept = clientVerdicts.get(session);
    if (kept === 'passed') return;
    if (kept) throw kept;
    const d = await ask(policy, session, policyRequest(session, 'connect'));
    const rej = policyReject(d, 'connect', 'mail');
    if (rej) {
      if (rej.code >= 500) clientVerdicts.set(session, rej);
      throw rej;
    }
    clientVerdicts.set(session, 'passed');
    verdicts.connected(session, d);
  };

  const acceptMessage = async (input: Buffer, session: SMTPServerSession): Promise<string> => {
    const queueId = newQueueId();
    try {
      return await queueMessage(input, session, queueId);
    } catch (err) {
      if (err instanceof SmtpReject) throw rejectWith(err, session, { queueId });
      throw err;
    }
  };

  const queueMessage = async (input: Buffer, session: SMTPServerSession, queueId: string) => {
    mayTransact(session);
    const lines = inspectLineEndings(input);
    if (lines.smuggling) throw reply.bareLineEnding();
    // Other bare CR/LF are rewritten to CRLF, so no later hop can read them differently.
    let message = lines.bare ? normalizeLineEndings(input) : input;
    const headerRefused = headerRefusal(message);
    if (headerRefused) throw headerRefused;
    await role.checkMessage?.(message, session);
    const mailFrom = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const recipients = session.envelope.rcptTo.map((r) => r.address);
    const routes = routesOf(transactions.of(session), recipients);
    const discarded = () => {
      metrics.discarded();
      logger.info(
        { queueId, sid: session.id, client: session.remoteAddress, user: sessionUser(session) },
        'discarded by policy',
      );
      return queueId;
    };
    let filing: Envelope['filing'];
    let edits: HeaderEdits = { headers: [], removeHeaders: ownRemovals };
    if (policy) {
      const st = verdicts.tx(session);
      if (st.discard) return discarded();
      // the message as the client sent it is scanned, before the role changes or signs it
      const d = await ask(
        policy,
        session,
        { ...policyRequest(session, 'data'), queueId, size: message.length },
        { message, timeoutMs: config.policy_data_timeout },
      );
      const rej = policyReject(d, 'data');
      if (rej) throw rej;
      if (d.action === 'discard') return discarded();
      edits = { headers: d.headers, removeHeaders: [...ownRemovals, ...d.removeHeaders] };
      // Junk only means something for our own users' copies; remote ones leave as they are
      const held = new Set([...st.junk, ...d.junk]);
      const junk = routes.delivery.filter((r) => st.junkAll || held.has(r));
      if (junk.length || d.bulk) filing = { junk, bulk: d.bulk };
    }
    // one pass over the header section, for our removals and the policy's edits alike
    message = applyHeaderEdits(message, edits);

    const tlsInfo = sessionTls(session);
    const { hideClient, authenticated } = role.received;
    const trace = receivedHeader({
      // the EHLO name is often the machine's name or its LAN address ("[192.168.1.20]"),
      // so it is hidden along with the address and the reverse name
      helo: hideClient ? '' : session.hostNameAppearsAs,
      clientHostname: sessionHostname(session),
      clientIp: session.remoteAddress,
      myhostname: config.myhostname,
      queueId,
      tls: tlsInfo,
      authenticated,
      smtputf8: sessionSmtpUtf8(session),
      recipient: recipients.length === 1 ? recipients[0]! : null,
      hideClient,
    });
    const body = sessionBodyType(session);
    const finished: Finished = role.finish
      ? await role.finish(message, { session, queueId, mailFrom, trace, routes, body })
      : { message: Buffer.concat([Buffer.from(trace), message]) };

    const envelope: Envelope = {
      v: ENVELOPE_VERSION,
      queueId,
      mailFrom,
      recipients,
      client: {
        ip: session.remoteAddress,
        hostname: sessionHostname(session),
        helo: session.hostNameAppearsAs,
        tls: tlsInfo,
        user: sessionUser(session),
      },
      receivedAt: new Date().toISOString(),
      attempts: 0,
      body: finished.body ?? body,
      smtputf8: sessionSmtpUtf8(session),
      lastError: null,
      // the filing verdict (Junk, bulk) concerns only the local copies; outbound ignores it
      ...(filing ? { filing } : {}),
    };
    // one message, one confirm, for local and remote recipients together; not for a
    // session told 421 or gone meanwhile (a shutdown, a credential revoked)
    const publish = () => bus.publishMailRouted(finished.message, envelope, routes);
    let published: Promise<void> | undefined;
    for (const { server } of servers) published ??= server.publishFor(session, publish);
    if (!published) throw reply.sessionEnded();
    try {
      await published;
    } catch (err) {
      if (err instanceof PublishUnanswered) {
        // the stop's deadline came before the broker's confirm: no 250 for a message that
        // may not be queued; sent again, it may arrive twice, but it is never lost
        logger.warn({ sid: session.id, queueId }, 'stopped before the queue confirmed the message');
        throw reply.shuttingDownUnconfirmed();
      }
      if (err instanceof BusUnavailableError || err instanceof UnroutableError) {
        logger.warn({ sid: session.id, queueId, err }, 'queue unavailable, message not accepted');
        throw reply.queueUnavailable();
      }
      throw err;
    }
    metrics.accepted(finished.message.length, routes);
    if (policy) {
      metrics.policyTransaction(policyWaits.get(session) ?? 0);
      policyWaits.set(session, 0);
    }
    logger.info(
      {
        queueId,
        sid: session.id,
        client: session.remoteAddress,
        user: sessionUser(session),
        from: mailFrom,
        rcpts: recipients.length,
        size: finished.message.length,
        tls: !!tlsInfo,
        ...finished.log,
      },
      'accepted',
    );
    return queueId;
  };

  const makeServer = (listener: L, spec: ListenerSpec): MailyardSmtpServer => {
    const options: ListenerOptions = {
      name: config.myhostname,
      // smtp-server writes "<name> ESMTP <banner>": the banner is what follows ESMTP
      banner: role.banner,
      key: tls.current().key,
      cert: tls.current().cert,
      minVersion: MIN_TLS_VERSION,
      secure: spec.implicitTls,
      size: limit,
      // MAIL FROM answers 530 5.7.0 itself (mayTransact), so the refusal is counted and logged
      authOptional: true,
      ...(role.auth
        ? { authMethods: role.auth.methods, onAuth: role.auth.onAuth }
        : { disabledCommands: ['AUTH'] }),
      hideSTARTTLS: false,
      hidePIPELINING: false,
      hide8BITMIME: false,
      hideSMTPUTF8: false,
      hideENHANCEDSTATUSCODES: false,
      hideDSN: true,
      hideREQUIRETLS: true,
      maxClients: config.smtpd_max_clients,
      socketTimeout: config.smtpd_timeout,
      maxCommandLength: config.line_length_limit,
      disableReverseLookup: !role.reverseLookup,
      resolver: {
        reverse: (ip: string, cb: (err: Error | null, names?: string[]) => void) =>
          void deps.resolver.reverse(ip).then(
            (n) => cb(null, n),
            (e: Error) => cb(e),
          ),
      },
      logger: false,
      proxyTrusted: config.proxy_protocol_trusted_networks,
      hardErrorLimit: config.smtpd_hard_error_limit,
      junkCommandLimit: config.smtpd_junk_command_limit,
      forbidUnauthPipelining: config.smtpd_forbid_unauth_pipelining,
      greetingDelay: role.greetingDelay,
      onErrorReply: (code) => metrics.errorReply(code),
      // per listener, as Postfix counts per master.cf service
      clientLimits: new ClientLimits({
        service: listener,
        maxConnections: config.smtpd_client_connection_count_limit,
        ratePerMinute: config.smtpd_client_connection_rate_limit,
        exceptions: role.limitExceptions,
        redis: deps.redis,
        onError: (err) => logger.warn({ err }, 'connection rate counted in this process only'),
      }),
      onClientRefused: (ip, limit) => {
        metrics.clientRefused(limit);
        logger.info({ client: ip, listener, limit }, 'too many connections');
      },
      deadlines: {
        requestMs: config.smtpd_per_request_deadline ? config.smtpd_timeout : 0,
        minDataRate: config.smtpd_min_data_rate,
        loginMs: role.auth?.loginDeadlineMs ?? 0,
        onTimeout: (kind) => metrics.timedOut(kind),
      },
      onReject: rejectWith,

      onConnect(session, cb) {
        metrics.sessionOpened(listener);
        if (!policy || role.clientRestrictions !== 'connect') return cb();
        // RFC 5321 §3.1: a greeting is 220, 554 or 421, never 451
        const failure = { extra: {}, log: 'policy check failed', reply: reply.localErrorAtConnect };
        settle(session, cb, failure, async () => {
          const d = await ask(policy, session, policyRequest(session, 'connect'));
          const rej = policyReject(d, 'connect');
          if (rej) throw rej;
          verdicts.connected(session, d);
        });
      },

      ...(role.onClose ? { onClose: role.onClose } : {}),

      onMailFrom(address, session, cb) {
        const sender = address.address;
        settle(session, cb, { extra: { from: sender }, log: 'sender check failed' }, async () => {
          mayTransact(session);
          await askClientAfterLogin(session);
          if (sender !== '' && !parseMailAddress(sender).ok) throw reply.badSenderSyntax(sender);
          const declared =
            address.args && typeof address.args.SIZE === 'string' ? Number(address.args.SIZE) : 0;
          if (declared > limit) throw reply.messageTooBig(limit);
          // refused before the client sends the message the queue could not take (Postfix
          // too answers at MAIL when it cannot open a queue file)
          if (!bus.connected) throw reply.queueUnavailable();
          if (bus.blocked) throw reply.insufficientStorage();
          // our own checks first: the policy service only counts senders we would accept
          await role.checkSender?.(sender, session);
          await askPolicy(session, 'mail', { sender, size: declared || null });
        });
      },

      onRcptTo(address, session, cb) {
        settle(
          session,
          cb,
          { extra: { rcpt: address.address }, log: 'recipient lookup failed' },
          async () => {
            mayTransact(session);
            const tx = transactions.of(session);
            if (++tx.rcptCommands > config.smtpd_recipient_limit) throw reply.tooManyRecipients();
            // the envelope takes the qualified address: smtp-server keeps this object
            if (role.postmaster && /^postmaster$/i.test(address.address)) {
              address.address = await role.postmaster();
              // smtp-server drops a repeated recipient by the address as written, which was
              // the bare one: taken once, answered 250 as Postfix answers a duplicate
              const qualified = address.address.toLowerCase();
              if (session.envelope.rcptTo.some((r) => r.address.toLowerCase() === qualified))
                return duplicateRecipient();
            }
            const rcpt = address.address;
            // routed first: the policy service (per-user recipient limits) counts only routable ones
            const route = await role.routeRecipient(forwardPath(address), session);
            // RFC 5321 §4.5.3.1.10: the client sends the rest in another transaction
            if (!envelopeHasRoom(tx, rcpt, route, { filing: policy !== null }))
              throw reply.tooManyRecipients();
            await askPolicy(session, 'rcpt', { recipient: rcpt });
            addRoute(tx, rcpt, route);
          },
        );
      },

      onData(stream, session, cb) {
        answerData(
          stream,
          {
            limit,
            memory: dataMemory,
            accept: (raw) => acceptMessage(raw, session),
            refuse: (err) => rejectWith(err, session),
            failed: (err) => logger.error({ sid: session.id, err }, 'accepting the message failed'),
            observe: (seconds) => metrics.acceptLatency(seconds),
          },
          cb,
        );
      },
    };
    return role.auth ? new SubmissionSmtpServer(options) : new MailyardSmtpServer(options);
  };

  const listeners = Object.entries(role.listeners) as [L, ListenerSpec][];
  const servers = listeners.map(([name, spec]) => ({ name, spec, server: makeServer(name, spec) }));
  // STARTTLS and implicit TLS alike take the server's context at each handshake
  tls.onChange((p) => {
    for (const { server } of servers) server.updateSecureContext({ key: p.key, cert: p.cert });
  });
  const ports = Object.fromEntries(listeners.map(([name]) => [name, 0])) as Record<L, number>;

  const listen = ({ name, spec, server }: (typeof servers)[number]) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(spec.port, config.listen_address, () => {
        server.removeListener('error', reject);
        ports[name] = (server.server.address() as AddressInfo).port;
        server.on('error', (err: Error) => logger.warn({ listener: name, err }, 'smtp server error'));
        resolve();
      });
    });

  return {
    ports,
    readiness: config.policy_enabled ? [policyServiceCheck((q) => bus.consumerCount(q))] : [],
    closeSession: (id, err) => servers.some(({ server }) => server.closeSession(id, err)),
    async start() {
      policy?.start();
      await local?.start();
      for (const s of servers) await listen(s);
      // the service's one ready line at info says the ports (runtime's runMain)
      logger.debug({ ...(ports as Record<string, number>) }, `${role.service} listening`);
    },
    async stop() {
      const grace = config.shutdown_grace;
      const drain = drainTime(grace);
      // the answers of messages being queued and the last word to the clients take half of
      // the time kept for closing the broker and Redis connections, never all of it: a
      // broker that stopped confirming does not hold the stop past SHUTDOWN_GRACE
      const listenersStop = drain + (grace - drain) / 2;
      await Promise.all(servers.map(({ server }) => server.shutdown(drain, listenersStop)));
      await policy?.stop();
      await local?.stop();
      tls.close();
    },
  };
}
