import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type {
  SMTPServerAddress,
  SMTPServerAuthentication,
  SMTPServerDataStream,
  SMTPServerSession,
} from 'smtp-server';
import {
  answerData,
  forwardPath,
  rcptCounter,
  sessionBodyType,
  sessionHostname,
  sessionSmtpUtf8,
  sessionTls,
} from '@mailyard/smtp-listener';
import {
  ClientLimits,
  actingFor,
  logIn,
  type Authenticator,
  type CredentialRevocations,
  type ServiceAuthorizer,
} from '@mailyard/auth';
import type { Redis } from 'ioredis';
import { BusUnavailableError, UnroutableError, type Bus } from '@mailyard/bus';
import { drainTime, loadTlsMaterial } from '@mailyard/config';
import { ENVELOPE_VERSION, type Envelope, type PolicyRequestInput } from '@mailyard/contracts';
import type { Directory } from '@mailyard/directory';
import type { DkimSigner } from '@mailyard/dkim';
import type { MailResolver } from '@mailyard/dns';
import type { Logger, ReadinessCheck, Registry } from '@mailyard/observability';
import {
  createPolicyClient,
  PolicyVerdicts,
  applyHeaderEdits,
  applyVerdict,
  policyReject,
  policyServiceCheck,
  type PolicyAsker,
} from '@mailyard/policy-client';
import {
  SmtpReject,
  inspectLineEndings,
  newQueueId,
  normalizeLineEndings,
  parseMailAddress,
  receivedHeader,
  reply,
  rfc5322Date,
} from '@mailyard/smtp-core';
import type { MsaConfig } from './config.js';
import { applySubmissionFixups, fieldValue, fieldsNamed, mailboxAddresses, splitMessage } from './headers.js';
import { createMetrics } from './metrics.js';
import { checkRecipientDomain } from './recipient-domain.js';
import { ownsAddress } from './sender.js';
import { SubmissionSmtpServer } from './submission-server.js';

export interface MsaDeps {
  bus: Bus;
  directory: Directory;
  authenticator: Authenticator;
  /** Ends sessions whose app password is revoked; started and closed with the service. */
  revocations: CredentialRevocations;
  /** Accepts the webmail's login acting for a user (SASL PLAIN authzid); without it, refused. */
  serviceAuth?: ServiceAuthorizer;
  resolver: MailResolver;
  /** Null when DKIM signing is off. */
  dkim: DkimSigner | null;
  logger: Logger;
  registry: Registry;
  /** Policy RPC client; by default one is built from the config when POLICY_ENABLED is on. */
  policy?: PolicyAsker | null;
  /** Where the per-client connection rate is counted across instances; without it, in this process. */
  redis?: Redis;
}

type Route = 'delivery' | 'outbound';
interface RoutedRecipient extends SMTPServerAddress {
  route?: Route;
}

export interface Msa {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Beyond the broker and Redis: the policy service has a consumer (with POLICY_ENABLED). */
  readiness: ReadinessCheck[];
  /** Bound ports (useful with port 0). */
  readonly ports: { submission: number; submissions: number };
}

type Listener = 'submission' | 'submissions';

/** The account a session logged in as (set by onAuth), or null. */
function accountOf(session: SMTPServerSession): string | null {
  return typeof session.user === 'string' && session.user ? session.user : null;
}

/**
 * Message submission (RFC 6409): port 587 with STARTTLS and 465 with implicit TLS
 * (RFC 8314). Only authenticated users may send, only as their own addresses; the
 * message is fixed up, signed (DKIM) and published to `delivery` (local recipients)
 * and `outbound` (remote ones); 250 only once the broker confirmed.
 */
export function buildMsa(config: MsaConfig, deps: MsaDeps): Msa {
  const { bus, directory, resolver, logger, authenticator } = deps;
  const metrics = createMetrics(deps.registry);
  const tls = loadTlsMaterial({
    certFile: config.tls_cert_file,
    keyFile: config.tls_key_file,
    hostname: config.myhostname,
  });
  if (tls.selfSigned)
    logger.warn('no TLS_CERT_FILE/TLS_KEY_FILE configured: submission uses a self-signed certificate');
  const limit = config.message_size_limit;
  const delimiter = config.recipient_delimiter;

  const rejectWith = (err: SmtpReject, session: SMTPServerSession, extra: Record<string, unknown> = {}) => {
    metrics.rejections.inc({ reason: err.reason });
    logger.info(
      {
        sid: session.id,
        client: session.remoteAddress,
        user: accountOf(session),
        reason: err.reason,
        reply: err.line,
        ...extra,
      },
      'rejected',
    );
    return err;
  };

  // per transaction (the envelope object is replaced on RSET/EHLO/end of message)
  const countRcpt = rcptCounter();
  const ownedBy = new WeakMap<object, Set<string>>();

  const policy: PolicyAsker | null =
    deps.policy !== undefined
      ? deps.policy
      : config.policy_enabled
        ? createPolicyClient('msa', config, {
            bus,
            logger,
            registry: deps.registry,
            observe: (stage, seconds, outcome) => metrics.policyLatency.observe({ stage, outcome }, seconds),
          })
        : null;
  const verdicts = new PolicyVerdicts();
  const clientHostnameOf = (session: SMTPServerSession) => sessionHostname(session);
  // the SASL user travels with every request: permit_sasl_authenticated and the
  // per-user rate limits key on it
  const policyRequest = (session: SMTPServerSession, stage: PolicyRequestInput['stage']) => ({
    stage,
    origin: 'msa' as const,
    sessionId: session.id,
    client: {
      ip: session.remoteAddress,
      hostname: clientHostnameOf(session),
      // false before EHLO
      helo: typeof session.hostNameAppearsAs === 'string' ? session.hostNameAppearsAs : '',
    },
    user: accountOf(session),
    sender: session.envelope.mailFrom ? session.envelope.mailFrom.address : null,
    recipients: session.envelope.rcptTo.map((r) => r.address),
    tls: !!session.secure,
  });

  const ownedAddresses = async (session: SMTPServerSession, account: string): Promise<Set<string>> => {
    let owned = ownedBy.get(session.envelope);
    if (!owned) {
      owned = new Set(await directory.addressesOf(account));
      ownedBy.set(session.envelope, owned);
    }
    return owned;
  };

  const checkSender = async (
    address: string,
    session: SMTPServerSession,
    declared: number,
  ): Promise<void> => {
    const account = accountOf(session);
    if (!account) throw reply.authRequired();
    // the null sender is for bounces (RFC 5321 §4.5.5), which users do not send
    if (address === '') throw reply.senderLoginMismatch('', account);
    if (!parseMailAddress(address).ok) throw reply.badSenderSyntax(address);
    if (!ownsAddress(await ownedAddresses(session, account), address, delimiter))
      throw reply.senderLoginMismatch(address, account);
    // our own checks first: the policy service only counts senders we would accept
    if (!policy) return;
    const st = verdicts.tx(session);
    if (st.accepted) return;
    const d = await policy.ask({
      ...policyRequest(session, 'mail'),
      sender: address,
      size: declared || null,
    });
    const rej = policyReject(d, 'mail');
    if (rej) throw rej;
    applyVerdict(st, d);
  };

  /** Routes the recipient, then asks the policy service (per-user recipient limits count only routable ones). */
  const checkRecipient = async (address: RoutedRecipient, session: SMTPServerSession): Promise<void> => {
    address.route = await routeRecipient(forwardPath(address));
    if (!policy) return;
    const st = verdicts.tx(session);
    if (st.accepted) return;
    const d = await policy.ask({ ...policyRequest(session, 'rcpt'), recipient: address.address });
    const rej = policyReject(d, 'rcpt');
    if (rej) throw rej;
    applyVerdict(st, d, address.address);
  };

  const routeRecipient = async (address: string): Promise<Route> => {
    const parsed = parseMailAddress(address);
    // relay tricks (%-hack, quoted @, source routes) are malformed addresses here
    if (!parsed.ok) throw reply.badRecipientSyntax(address);
    const { domain } = parsed.value;
    if (domain.startsWith('[')) return 'outbound';
    if (await directory.isLocalDomain(domain)) {
      if (!(await directory.resolve(parsed.value.address))) throw reply.noSuchUser(address);
      return 'delivery';
    }
    switch (await checkRecipientDomain(resolver, domain)) {
      case 'ok':
        return 'outbound';
      case 'no_mail':
        throw reply.noMxDomain(address, domain);
      case 'temp_fail':
        throw reply.dnsTempFail(address);
    }
  };

  // sessions logged in with an app password: session id -> stop watching it
  const unwatchCredential = new Map<string, () => void>();

  const onAuth = (
    auth: SMTPServerAuthentication,
    session: SMTPServerSession,
    cb: (err: Error | null | undefined, response?: { user: string }) => void,
  ) => {
    const username = (auth.username ?? '').trim();
    const password = auth.password ?? '';
    const fail = (err: SmtpReject, extra: Record<string, unknown> = {}) => {
      metrics.authFailures.inc({ reason: err.reason });
      // the attempted user name is logged (fail2ban needs it), never the password
      logger.info(
        {
          sid: session.id,
          client: session.remoteAddress,
          username,
          method: auth.method,
          reason: err.reason,
          ...extra,
        },
        'login refused',
      );
      cb(err);
    };
    // RFC 4616 §2: an authorization identity other than the login is a request to act
    // as someone else, which only the webmail's service login may make
    const authzid = auth.method === 'PLAIN' ? (auth.authzid ?? '') : '';
    logIn(authenticator, deps.serviceAuth, { ip: session.remoteAddress, username, password, authzid }).then(
      (res) => {
        if (res.ok) {
          metrics.logins.inc({ via: res.via });
          logger.info(
            {
              sid: session.id,
              client: session.remoteAddress,
              user: res.account,
              method: auth.method,
              via: res.via,
            },
            res.service ? `login: ${actingFor(res.service, res.account)}` : 'login',
          );
          if (res.appPassword) {
            const unwatch = deps.revocations.watch(res.account, res.appPassword, () => {
              logger.info({ sid: session.id, user: res.account }, 'app password revoked: session ended');
              for (const server of Object.values(servers))
                if (server.closeSession(session.id, reply.credentialRevoked())) break;
            });
            unwatchCredential.set(session.id, unwatch);
          }
          return cb(null, { user: res.account });
        }
        switch (res.reason) {
          // same reply for an unknown account and a wrong password (RFC 4954 §6)
          case 'invalid':
            return fail(reply.authInvalid());
          case 'locked':
            return fail(reply.authLocked(res.retryAfterSeconds));
          case 'unavailable':
            return fail(reply.authTempFail(), { err: res.error });
        }
      },
      (err: unknown) => fail(reply.authTempFail(), { err }),
    );
  };

  const acceptMessage = async (input: Buffer, session: SMTPServerSession): Promise<string> => {
    const account = accountOf(session);
    if (!account) throw rejectWith(reply.authRequired(), session);
    const lines = inspectLineEndings(input);
    if (lines.smuggling) throw rejectWith(reply.bareLineEnding(), session);
    const normalized = lines.bare ? normalizeLineEndings(input) : input;
    const queueId = newQueueId();
    const mailFrom = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const split = splitMessage(normalized);

    // reject_sender_login_mismatch applies to the author too: From: and Sender: must be ours
    const owned = await ownedAddresses(session, account);
    const authors = [...fieldsNamed(split, 'from'), ...fieldsNamed(split, 'sender')];
    const envelopeSender = parseMailAddress(mailFrom);
    let authorDomain = envelopeSender.ok ? envelopeSender.value.domain : null;
    for (const field of authors) {
      const addresses = mailboxAddresses(fieldValue(field));
      if (!addresses.length) throw rejectWith(reply.headerFromMismatch(fieldValue(field), account), session);
      for (const a of addresses) {
        if (!ownsAddress(owned, a, delimiter))
          throw rejectWith(reply.headerFromMismatch(a, account), session);
      }
    }
    const fromField = fieldsNamed(split, 'from')[0];
    if (fromField) {
      const first = parseMailAddress(mailboxAddresses(fieldValue(fromField))[0] ?? '');
      if (first.ok) authorDomain = first.value.domain;
    }

    const rcpts = session.envelope.rcptTo as RoutedRecipient[];
    let submitted = split;
    let junk: string[] = [];
    let bulk = false;
    if (policy) {
      const st = verdicts.tx(session);
      if (st.discard) {
        metrics.rejections.inc({ reason: 'policy_discard' });
        logger.info({ queueId, sid: session.id, user: account }, 'discarded by policy');
        return queueId;
      }
      // the message as the user sent it is scanned, before our fix-ups and signature
      const d = await policy.ask(
        { ...policyRequest(session, 'data'), queueId, size: normalized.length },
        normalized,
        config.policy_data_timeout,
      );
      const rej = policyReject(d, 'data');
      if (rej) throw rejectWith(rej, session, { queueId });
      if (d.action === 'discard') {
        metrics.rejections.inc({ reason: 'policy_discard' });
        logger.info({ queueId, sid: session.id, user: account }, 'discarded by policy');
        return queueId;
      }
      const edited = applyHeaderEdits(normalized, d);
      if (edited !== normalized) submitted = splitMessage(edited);
      // Junk only means something for our own users' copies; remote ones leave as they are
      const held = new Set([...st.junk, ...d.junk]);
      if (st.junkAll) for (const r of rcpts) held.add(r.address);
      junk = rcpts.filter((r) => r.route === 'delivery' && held.has(r.address)).map((r) => r.address);
      bulk = d.bulk;
    }

    const fixed = applySubmissionFixups(submitted, {
      from: `<${mailFrom}>`,
      date: rfc5322Date(),
      messageId: `<${queueId}.${randomBytes(6).toString('hex')}@${config.myhostname}>`,
    });

    const tlsInfo = sessionTls(session);
    const clientHostname = sessionHostname(session);
    const hideClient = !config.submission_received_client;
    const received = receivedHeader({
      // the EHLO name is often the machine's name or its LAN address ("[192.168.1.20]"),
      // so it is hidden along with the address and the reverse name
      helo: hideClient ? '' : session.hostNameAppearsAs,
      clientHostname,
      clientIp: session.remoteAddress,
      myhostname: config.myhostname,
      queueId,
      tls: tlsInfo,
      authenticated: true,
      smtputf8: sessionSmtpUtf8(session),
      recipient: rcpts.length === 1 ? rcpts[0]!.address : null,
      hideClient,
    });
    let message = Buffer.concat([Buffer.from(received), fixed.message]);

    if (deps.dkim && authorDomain) {
      try {
        const signed = await deps.dkim.sign(message, authorDomain);
        for (const e of signed.errors)
          logger.warn({ queueId, domain: authorDomain, err: e }, 'DKIM key problem');
        if (signed.headers) message = Buffer.concat([Buffer.from(signed.headers), message]);
        for (const s of signed.signatures) metrics.dkim.inc({ algorithm: s.algorithm });
        if (!signed.signatures.length) metrics.dkim.inc({ algorithm: 'none' });
      } catch (err) {
        // an unsigned message is still better than a refused one; the log says why
        metrics.dkim.inc({ algorithm: 'none' });
        logger.warn({ queueId, domain: authorDomain, err }, 'DKIM signing failed, sending unsigned');
      }
    }

    const base: Omit<Envelope, 'recipients'> = {
      v: ENVELOPE_VERSION,
      queueId,
      mailFrom,
      client: {
        ip: session.remoteAddress,
        hostname: clientHostname,
        helo: session.hostNameAppearsAs,
        tls: tlsInfo,
        user: account,
      },
      receivedAt: new Date().toISOString(),
      attempts: 0,
      body: sessionBodyType(session),
      smtputf8: sessionSmtpUtf8(session),
      lastError: null,
    };
    const routes = { delivery: [] as string[], outbound: [] as string[] };
    for (const r of rcpts) routes[r.route ?? 'outbound'].push(r.address);
    try {
      // one message, one confirm, for local and remote recipients together; the filing
      // verdict (Junk, bulk) concerns only the local copies and outbound ignores it
      await bus.publishMailRouted(
        message,
        {
          ...base,
          recipients: rcpts.map((r) => r.address),
          ...(junk.length || bulk ? { filing: { junk, bulk } } : {}),
        },
        routes,
      );
    } catch (err) {
      if (err instanceof BusUnavailableError || err instanceof UnroutableError) {
        logger.warn({ sid: session.id, queueId, err }, 'queue unavailable, message not accepted');
        throw rejectWith(reply.queueUnavailable(), session, { queueId });
      }
      throw err;
    }
    metrics.submissions.inc();
    for (const [route, list] of Object.entries(routes))
      if (list.length) metrics.recipients.inc({ route }, list.length);
    metrics.bytes.inc(message.length);
    logger.info(
      {
        queueId,
        sid: session.id,
        user: account,
        from: mailFrom,
        rcpts: rcpts.length,
        size: message.length,
        added: fixed.added,
        bccRemoved: fixed.removedBcc,
      },
      'accepted',
    );
    return queueId;
  };

  // per port, as Postfix counts per master.cf service
  const clientLimits = (listener: Listener) =>
    new ClientLimits({
      service: listener,
      maxConnections: config.smtpd_client_connection_count_limit,
      ratePerMinute: config.smtpd_client_connection_rate_limit,
      exceptions: config.smtpd_client_event_limit_exceptions,
      redis: deps.redis,
      onError: (err) => logger.warn({ err }, 'connection rate counted in this process only'),
    });

  const makeServer = (listener: Listener) =>
    new SubmissionSmtpServer({
      name: config.myhostname,
      // smtp-server writes "<name> ESMTP <banner>": the banner is what follows ESMTP
      banner: 'Mailyard submission',
      key: tls.key,
      cert: tls.cert,
      minVersion: 'TLSv1.2',
      secure: listener === 'submissions',
      size: limit,
      authMethods: ['PLAIN', 'LOGIN'],
      // our onMailFrom answers 530 5.7.0 itself, so the refusal is counted and logged
      authOptional: true,
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
      // the reverse name is only used in the Received header, and only when asked for
      disableReverseLookup: !config.submission_received_client,
      resolver: {
        reverse: (ip: string, cb: (err: Error | null, names?: string[]) => void) =>
          void resolver.reverse(ip).then(
            (n) => cb(null, n),
            (e: Error) => cb(e),
          ),
      },
      logger: false,
      proxyTrusted: config.proxy_protocol_trusted_networks,
      hardErrorLimit: config.smtpd_hard_error_limit,
      greetingDelay: 0,
      onErrorReply: (code) => metrics.errorReplies.inc({ code: String(code) }),
      clientLimits: clientLimits(listener),
      onClientRefused: (ip, limit) => {
        metrics.rejections.inc({ reason: limit.replace('-', '_') });
        logger.info({ client: ip, listener, limit }, 'too many connections');
      },
      deadlines: {
        requestMs: config.smtpd_per_request_deadline ? config.smtpd_timeout : 0,
        minDataRate: config.smtpd_min_data_rate,
        loginMs: config.login_timeout,
        onTimeout: (kind) => metrics.rejections.inc({ reason: `${kind}_timeout` }),
      },
      onReject: rejectWith,

      onConnect(session, cb) {
        metrics.sessions.inc({ listener });
        if (!policy) return cb();
        policy.ask(policyRequest(session, 'connect')).then(
          (d) => {
            const rej = policyReject(d, 'connect');
            if (rej) return cb(rejectWith(rej, session));
            verdicts.connected(session, d);
            cb();
          },
          (err: unknown) => {
            logger.error({ sid: session.id, err }, 'policy check failed');
            cb(rejectWith(reply.localError(), session));
          },
        );
      },

      onAuth,

      onClose(session) {
        unwatchCredential.get(session.id)?.();
        unwatchCredential.delete(session.id);
      },

      onMailFrom(address, session, cb) {
        const declared =
          address.args && typeof address.args.SIZE === 'string' ? Number(address.args.SIZE) : 0;
        if (accountOf(session) && declared > limit)
          return cb(rejectWith(reply.messageTooBig(limit), session));
        if (accountOf(session) && bus.blocked) return cb(rejectWith(reply.insufficientStorage(), session));
        checkSender(address.address, session, declared).then(
          () => cb(),
          (err: unknown) => {
            if (err instanceof SmtpReject) return cb(rejectWith(err, session, { from: address.address }));
            logger.error({ sid: session.id, err }, 'sender check failed');
            cb(rejectWith(reply.localError(), session));
          },
        );
      },

      onRcptTo(address: RoutedRecipient, session, cb) {
        if (!accountOf(session)) return cb(rejectWith(reply.authRequired(), session));
        if (countRcpt(session) > config.smtpd_recipient_limit)
          return cb(rejectWith(reply.tooManyRecipients(), session));
        checkRecipient(address, session).then(
          () => cb(),
          (err: unknown) => {
            if (err instanceof SmtpReject) return cb(rejectWith(err, session, { rcpt: address.address }));
            logger.error({ sid: session.id, err }, 'recipient lookup failed');
            cb(rejectWith(reply.localError(), session));
          },
        );
      },

      onData(stream: SMTPServerDataStream, session, cb) {
        answerData(
          stream,
          {
            limit,
            accept: (raw) => acceptMessage(raw, session),
            refuse: (err) => rejectWith(err, session),
            failed: (err) => logger.error({ sid: session.id, err }, 'accepting the message failed'),
            observe: (seconds) => metrics.acceptLatency.observe(seconds),
          },
          cb,
        );
      },
    });

  const servers: Record<Listener, SubmissionSmtpServer> = {
    submission: makeServer('submission'),
    submissions: makeServer('submissions'),
  };
  const ports = { submission: 0, submissions: 0 };

  const listen = (listener: Listener, port: number) =>
    new Promise<void>((resolve, reject) => {
      const server = servers[listener];
      server.once('error', reject);
      server.listen(port, config.listen_address, () => {
        server.removeListener('error', reject);
        ports[listener] = (server.server.address() as AddressInfo).port;
        server.on('error', (err: Error) => logger.warn({ listener, err }, 'smtp server error'));
        resolve();
      });
    });

  return {
    ports,
    readiness: config.policy_enabled ? [policyServiceCheck((q) => bus.consumerCount(q))] : [],
    async start() {
      policy?.start();
      deps.revocations.start();
      await listen('submission', config.submission_port);
      await listen('submissions', config.submissions_port);
      logger.info(ports, 'msa listening');
    },
    async stop() {
      const drain = drainTime(config.shutdown_grace);
      await Promise.all(Object.values(servers).map((s) => s.shutdown(drain)));
      await policy?.stop();
      deps.revocations.close();
    },
  };
}
