import type { SMTPServerSession } from 'smtp-server';
import { ipInNetworks } from '@mailyard/config';
import type { Directory } from '@mailyard/directory';
import type { ReadinessCheck } from '@mailyard/observability';
import { normalizeDomain, parseMailAddress, reply } from '@mailyard/smtp-core';
import {
  createIntake,
  localPostmaster,
  type IntakeDeps,
  type IntakeRole,
  type Route,
} from '@mailyard/smtp-intake';
import type { MtaInboundConfig } from './config.js';

export interface MtaInboundDeps extends IntakeDeps {
  directory: Directory;
}

export interface MtaInbound {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Beyond the broker and Redis: the policy service has a consumer (with POLICY_ENABLED). */
  readiness: ReadinessCheck[];
  /** The bound SMTP port (useful with port 0). */
  readonly port: number;
  /** For the ready line: `{ smtp: port }`. */
  listening(): Record<string, number>;
}

/**
 * Port 25: accepts mail for our domains (and relays for mynetworks / relay_domains),
 * publishes each message to the bus and answers 250 only after the broker confirmed.
 * The intake does the rest; this is the MTA's part: who may send to which recipient.
 */
export function buildMtaInbound(config: MtaInboundConfig, deps: MtaInboundDeps): MtaInbound {
  const intake = createIntake(config, mtaRole(config, deps.directory), deps);
  return {
    get port() {
      return intake.ports.smtpd;
    },
    readiness: intake.readiness,
    listening: () => ({ smtp: intake.ports.smtpd }),
    start: () => intake.start(),
    stop: () => intake.stop(),
  };
}

function mtaRole(config: MtaInboundConfig, directory: Directory): IntakeRole<'smtpd'> {
  const relayDomains = new Set(config.relay_domains.map((d) => normalizeDomain(d) ?? d.toLowerCase()));
  return {
    service: 'mta-inbound',
    banner: 'Mailyard',
    // the name keys the per-client connection rate in Redis, as before the intake
    listeners: { smtpd: { port: config.smtp_port, implicitTls: false } },
    reverseLookup: config.smtpd_peername_lookup,
    greetingDelay: config.postscreen_greet_wait,
    limitExceptions: config.smtpd_client_event_limit_exceptions ?? config.mynetworks,
    clientRestrictions: 'connect',
    received: { authenticated: false, hideClient: false },

    /**
     * Local domains: the recipient must exist. Anything else is relaying, allowed only
     * from mynetworks or to relay_domains (DESIGN promise 4); relay tricks never.
     */
    async routeRecipient(address: string, session: SMTPServerSession): Promise<Route> {
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
      if (ipInNetworks(session.remoteAddress, config.mynetworks) || relayDomains.has(domain))
        return 'outbound';
      throw reply.relayDenied(address);
    },

    /** RFC 5321 §4.5.1: postmaster of the local domain myhostname is in. */
    postmaster: () => localPostmaster(directory, config.myhostname),
  };
}
