import type { AddressInfo } from 'node:net';
import type { SMTPServerAddress, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { Redis } from 'ioredis';
import { ClientLimits } from '@mailyard/auth';
import { BusUnavailableError, UnroutableError, type Bus } from '@mailyard/bus';
import { drainTime, ipInNetworks, loadTlsMaterial } from '@mailyard/config';
import { ENVELOPE_VERSION, type Envelope, type PolicyRequestInput } from '@mailyard/contracts';
import type { Directory } from '@mailyard/directory';
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
  normalizeDomain,
  normalizeLineEndings,
  parseMailAddress,
  receivedHeader,
  reply,
} from '@mailyard/smtp-core';
import {
  answerData,
  forwardPath,
  MailyardSmtpServer,
  rcptCounter,
  sessionBodyType,
  sessionHostname,
  sessionSmtpUtf8,
  sessionTls,
} from '@mailyard/smtp-listener';
import type { MtaInboundConfig } from './config.js';
import { createMetrics } from './metrics.js';

export interface MtaInboundDeps {
  bus: Bus;
  directory: Directory;
  resolver: MailResolver;
  logger: Logger;
  registry: Registry;
  /** Policy RPC client; by default one is built from the config when POLICY_ENABLED is on. */
  policy?: PolicyAsker | null;
  /** Where the per-client connection rate is counted across instances; without it, in this process. */
  redis?: Redis;
}

export type { PolicyAsker };

type Route = 'delivery' | 'outbound';
interface RoutedRecipient extends SMTPServerAddress {
  route?: Route;
}

export interface MtaInbound {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Beyond the broker and Redis: the policy service has a consumer (with POLICY_ENABLED). */
  readiness: ReadinessCheck[];
  /** The bound SMTP port (useful with port 0). */
  readonly port: number;
}

/**
 * Port 25: accepts mail for our domains (and relays for mynetworks / relay_domains),
 * publishes each message to the bus and answers 250 only after the broker confirmed.
 */
export function buildMtaInbound(config: MtaInboundConfig, deps: MtaInboundDeps): MtaInbound {
  const { bus, directory, resolver, logger } = deps;
  const metrics = createMetrics(deps.registry);
  const tls = loadTlsMaterial({
    certFile: config.tls_cert_file,
    keyFile: config.tls_key_file,
    hostname: config.myhostname,
  });
  if (tls.selfSigned)
    logger.warn('no TLS_CERT_FILE/TLS_KEY_FILE configured: STARTTLS uses a self-signed certificate');
  const relayDomains = new Set(config.relay_domains.map((d) => normalizeDomain(d) ?? d.toLowerCase()));
  const limit = config.message_size_limit;

  const rejectWith = (err: SmtpReject, session: SMTPServerSession, extra: Record<string, unknown> = {}) => {
    metrics.messages.inc({ result: 'rejected', reason: err.reason });
    logger.info(
      { sid: session.id, client: session.remoteAddress, reason: err.reason, reply: err.line, ...extra },
      'rejected',
    );
    return err;
  };

  const countRcpt = rcptCounter();

  const policy: PolicyAsker | null =
    deps.policy !== undefined
      ? deps.policy
      : config.policy_enabled
        ? createPolicyClient('mta-inbound', config, {
            bus,
            logger,
            registry: deps.registry,
            observe: (stage, seconds, outcome) => metrics.policyLatency.observe({ stage, outcome }, seconds),
          })
        : null;
  // per session (connect verdicts) and per transaction (envelope: MAIL, RCPT verdicts)
  const verdicts = new PolicyVerdicts();
  const txState = (session: SMTPServerSession) => verdicts.tx(session);
  const policyRequest = (session: SMTPServerSession, stage: PolicyRequestInput['stage']) => ({
    stage,
    origin: 'mta-inbound' as const,
    sessionId: session.id,
    client: {
      ip: session.remoteAddress,
      hostname: sessionHostname(session),
      // false before HELO
      helo: typeof session.hostNameAppearsAs === 'string' ? session.hostNameAppearsAs : '',
    },
    sender: session.envelope.mailFrom ? session.envelope.mailFrom.address : null,
    recipients: session.envelope.rcptTo.map((r) => r.address),
    tls: !!session.secure,
  });
  const routeRecipient = async (address: string, session: SMTPServerSession): Promise<Route> => {
    const parsed = parseMailAddress(address);
    if (!parsed.ok) {
      throw parsed.kind === 'relay_trick' ? reply.relayDenied(address) : reply.badRecipientSyntax(address);
    }
    const { domain } = parsed.value;
    if (!domain.startsWith('[')) {
      const { localDomain, match } = await directory.lookup(parsed.value.address);
      if (localDomain) {
        if (!match) throw reply.noSuchUser(address);
        return 'delivery';
      }
    }
    if (ipInNetworks(session.remoteAddress, config.mynetworks) || relayDomains.has(domain)) return 'outbound';
    throw reply.relayDenied(address);
  };

  const clientLimits = new ClientLimits({
    service: 'smtpd',
    maxConnections: config.smtpd_client_connection_count_limit,
    ratePerMinute: config.smtpd_client_connection_rate_limit,
    exceptions: config.smtpd_client_event_limit_exceptions ?? config.mynetworks,
    redis: deps.redis,
    onError: (err) => logger.warn({ err }, 'connection rate counted in this process only'),
  });

  const server = new MailyardSmtpServer({
    name: config.myhostname,
    // smtp-server writes "<name> ESMTP <banner>": the banner is what follows ESMTP
    banner: 'Mailyard',
    key: tls.key,
    cert: tls.cert,
    minVersion: 'TLSv1.2',
    size: limit,
    authOptional: true,
    disabledCommands: ['AUTH'],
    hideSTARTTLS: false,
    hidePIPELINING: false,
    hide8BITMIME: false,
    hideSMTPUTF8: false,
    hideENHANCEDSTATUSCODES: false,
    hideDSN: true,
    maxClients: config.smtpd_max_clients,
    socketTimeout: config.smtpd_timeout,
    maxCommandLength: config.line_length_limit,
    disableReverseLookup: !config.smtpd_peername_lookup,
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
    greetingDelay: config.postscreen_greet_wait,
    onErrorReply: (code) => metrics.errorReplies.inc({ code: String(code) }),
    clientLimits,
    onClientRefused: (ip, limit) => {
      metrics.refusedConnections.inc({ limit });
      logger.info({ client: ip, limit }, 'too many connections');
    },
    deadlines: {
      requestMs: config.smtpd_per_request_deadline ? config.smtpd_timeout : 0,
      minDataRate: config.smtpd_min_data_rate,
      loginMs: 0,
      onTimeout: (kind) => metrics.timeouts.inc({ kind }),
    },
    onReject: rejectWith,

    onConnect(session, cb) {
      metrics.sessions.inc();
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

    onMailFrom(address, session, cb) {
      if (address.address !== '') {
        const p = parseMailAddress(address.address);
        if (!p.ok) return cb(rejectWith(reply.badSenderSyntax(address.address), session));
      }
      const declared = address.args && typeof address.args.SIZE === 'string' ? Number(address.args.SIZE) : 0;
      if (declared > limit) return cb(rejectWith(reply.messageTooBig(limit), session));
      // refused before the client sends the message the queue could not take
      if (bus.blocked) return cb(rejectWith(reply.insufficientStorage(), session));
      if (!policy) return cb();
      const st = txState(session);
      if (st.accepted) return cb();
      policy
        .ask({
          ...policyRequest(session, 'mail'),
          sender: address.address,
          size: declared || null,
        })
        .then(
          (d) => {
            const rej = policyReject(d, 'mail');
            if (rej) return cb(rejectWith(rej, session, { from: address.address }));
            applyVerdict(st, d);
            cb();
          },
          (err: unknown) => {
            logger.error({ sid: session.id, err }, 'policy check failed');
            cb(rejectWith(reply.localError(), session));
          },
        );
    },

    onRcptTo(address: RoutedRecipient, session, cb) {
      if (countRcpt(session) > config.smtpd_recipient_limit)
        return cb(rejectWith(reply.tooManyRecipients(), session));
      routeRecipient(forwardPath(address), session)
        .then(async (route) => {
          address.route = route;
          if (!policy) return;
          const st = txState(session);
          if (st.accepted) return;
          const d = await policy.ask({ ...policyRequest(session, 'rcpt'), recipient: address.address });
          const rej = policyReject(d, 'rcpt');
          if (rej) throw rej;
          applyVerdict(st, d, address.address);
        })
        .then(
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

  const acceptMessage = async (input: Buffer, session: SMTPServerSession): Promise<string> => {
    const lines = inspectLineEndings(input);
    if (lines.smuggling) throw rejectWith(reply.bareLineEnding(), session);
    // Other bare CR/LF are rewritten to CRLF, so no later hop can read them differently.
    let body = lines.bare ? normalizeLineEndings(input) : input;
    const queueId = newQueueId();
    const rcpts = session.envelope.rcptTo as RoutedRecipient[];
    const st = txState(session);
    let filing: Envelope['filing'];
    if (policy && st.discard) {
      metrics.messages.inc({ result: 'discarded', reason: 'policy' });
      logger.info({ queueId, sid: session.id, client: session.remoteAddress }, 'discarded by policy');
      return queueId;
    }
    if (policy) {
      const d = await policy.ask(
        { ...policyRequest(session, 'data'), queueId, size: body.length },
        body,
        config.policy_data_timeout,
      );
      const rej = policyReject(d, 'data');
      if (rej) throw rejectWith(rej, session, { queueId });
      if (d.action === 'discard') {
        metrics.messages.inc({ result: 'discarded', reason: 'policy' });
        logger.info({ queueId, sid: session.id, client: session.remoteAddress }, 'discarded by policy');
        return queueId;
      }
      body = applyHeaderEdits(body, d);
      const junk = new Set([...st.junk, ...d.junk]);
      if (st.junkAll) for (const r of rcpts) junk.add(r.address);
      if (junk.size || d.bulk) filing = { junk: [...junk], bulk: d.bulk };
    }
    const tlsInfo = sessionTls(session);
    const received = receivedHeader({
      helo: session.hostNameAppearsAs,
      clientHostname: sessionHostname(session),
      clientIp: session.remoteAddress,
      myhostname: config.myhostname,
      queueId,
      tls: tlsInfo,
      authenticated: false,
      smtputf8: sessionSmtpUtf8(session),
      recipient: rcpts.length === 1 ? rcpts[0]!.address : null,
    });
    const message = Buffer.concat([Buffer.from(received), body]);
    const mailFrom = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const base: Omit<Envelope, 'recipients'> = {
      v: ENVELOPE_VERSION,
      queueId,
      mailFrom,
      client: {
        ip: session.remoteAddress,
        hostname: sessionHostname(session),
        helo: session.hostNameAppearsAs,
        tls: tlsInfo,
        user: null,
      },
      receivedAt: new Date().toISOString(),
      attempts: 0,
      body: sessionBodyType(session),
      smtputf8: sessionSmtpUtf8(session),
      lastError: null,
      ...(filing ? { filing } : {}),
    };
    const routes = { delivery: [] as string[], outbound: [] as string[] };
    for (const r of rcpts) routes[r.route ?? 'delivery'].push(r.address);
    try {
      // one message, one confirm, for local and remote recipients together
      await bus.publishMailRouted(message, { ...base, recipients: rcpts.map((r) => r.address) }, routes);
    } catch (err) {
      if (err instanceof BusUnavailableError || err instanceof UnroutableError) {
        logger.warn({ sid: session.id, queueId, err }, 'queue unavailable, message not accepted');
        throw rejectWith(reply.queueUnavailable(), session, { queueId });
      }
      throw err;
    }
    metrics.messages.inc({ result: 'accepted', reason: 'ok' });
    metrics.bytes.inc(message.length);
    logger.info(
      {
        queueId,
        sid: session.id,
        client: session.remoteAddress,
        from: mailFrom,
        rcpts: rcpts.length,
        size: message.length,
        tls: !!tlsInfo,
      },
      'accepted',
    );
    return queueId;
  };

  let port = 0;
  return {
    get port() {
      return port;
    },
    readiness: config.policy_enabled ? [policyServiceCheck((q) => bus.consumerCount(q))] : [],
    async start() {
      policy?.start();
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.smtp_port, config.listen_address, () => {
          server.removeListener('error', reject);
          port = (server.server.address() as AddressInfo).port;
          resolve();
        });
      });
      server.on('error', (err: Error) => logger.warn({ err }, 'smtp server error'));
      logger.info({ port }, 'mta-inbound listening');
    },
    async stop() {
      await server.shutdown(drainTime(config.shutdown_grace));
      await policy?.stop();
    },
  };
}
