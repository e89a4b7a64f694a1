import type { Authenticator, CredentialRevocations, ServiceAuthorizer } from '@mailyard/auth';
import type { ReadinessCheck } from '@mailyard/observability';
import { createIntake, type IntakeDeps } from '@mailyard/smtp-intake';
import type { Directory } from '@mailyard/directory';
import type { DkimSigner } from '@mailyard/dkim';
import type { MsaConfig } from './config.js';
import { submissionLogin } from './login.js';
import { submissionRole, type Listener } from './submission.js';

export interface MsaDeps extends IntakeDeps {
  directory: Directory;
  authenticator: Authenticator;
  /** Ends sessions whose app password is revoked; started and closed with the service. */
  revocations: CredentialRevocations;
  /** Accepts the webmail's login acting for a user (SASL PLAIN authzid); without it, refused. */
  serviceAuth?: ServiceAuthorizer;
  /** Null when DKIM signing is off. */
  dkim: DkimSigner | null;
}

export interface Msa {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Beyond the broker and Redis: the policy service has a consumer (with POLICY_ENABLED). */
  readiness: ReadinessCheck[];
  /** Bound ports (useful with port 0). */
  readonly ports: Record<Listener, number>;
  /** For the ready line: `{ submission, submissions }`. */
  listening(): Record<string, number>;
}

/**
 * Message submission (RFC 6409): port 587 with STARTTLS and 465 with implicit TLS
 * (RFC 8314). Only authenticated users may send, only as their own addresses; the
 * message is fixed up, signed (DKIM) and published to `delivery` (local recipients)
 * and `outbound` (remote ones); 250 only once the broker confirmed.
 */
export function buildMsa(config: MsaConfig, deps: MsaDeps): Msa {
  const login = submissionLogin(
    { ...deps, closeSession: (id, err) => intake.closeSession(id, err) },
    config.login_timeout,
  );
  const intake = createIntake(config, submissionRole(config, deps, login), deps);
  return {
    ports: intake.ports,
    readiness: intake.readiness,
    listening: () => ({ ...intake.ports }),
    async start() {
      deps.revocations.start();
      await intake.start();
    },
    async stop() {
      await intake.stop();
      deps.revocations.close();
    },
  };
}
