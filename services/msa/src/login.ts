import type { SMTPServerSession } from 'smtp-server';
import {
  actingFor,
  endedText,
  logIn,
  type Authenticator,
  type CredentialRevocations,
  type ServiceAuthorizer,
} from '@mailyard/auth';
import { Counter, type Logger, type Registry } from '@mailyard/observability';
import { reply, type SmtpReject } from '@mailyard/smtp-core';
import type { IntakeAuth } from '@mailyard/smtp-intake';

export interface LoginDeps {
  authenticator: Authenticator;
  /** Accepts the webmail's login acting for a user (SASL PLAIN authzid); without it, refused. */
  serviceAuth?: ServiceAuthorizer;
  /** Ends sessions whose app password is revoked. */
  revocations: CredentialRevocations;
  logger: Logger;
  registry: Registry;
  /** Ends session `id` with a 421 (the intake's closeSession). */
  closeSession(id: string, err: SmtpReject): boolean;
}

export interface SubmissionLogin {
  auth: IntakeAuth;
  /** Stops watching the session's app password. */
  onClose: (session: SMTPServerSession) => void;
}

/**
 * AUTH PLAIN and LOGIN on submission, through `@mailyard/auth` (account or app
 * password, the lockout shared with IMAP, POP3 and webmail). A session logged in with
 * an app password ends when that password is revoked.
 */
export function submissionLogin(deps: LoginDeps, loginDeadlineMs: number): SubmissionLogin {
  const { logger } = deps;
  const logins = new Counter({
    name: 'mailyard_msa_auth_success_total',
    help: 'Successful logins, by credential (password, app-password)',
    labelNames: ['via'] as const,
    registers: [deps.registry],
  });
  const failures = new Counter({
    name: 'mailyard_msa_auth_failures_total',
    help: 'Refused logins, by reason (auth_invalid, auth_locked, auth_temp_fail)',
    labelNames: ['reason'] as const,
    registers: [deps.registry],
  });
  // sessions logged in with an app password: session id -> stop watching it
  const unwatchCredential = new Map<string, () => void>();

  const onAuth: IntakeAuth['onAuth'] = (auth, session, cb) => {
    const username = (auth.username ?? '').trim();
    const password = auth.password ?? '';
    const fail = (err: SmtpReject, extra: Record<string, unknown> = {}) => {
      failures.inc({ reason: err.reason });
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
    logIn(deps.authenticator, deps.serviceAuth, {
      ip: session.remoteAddress,
      username,
      password,
      authzid,
      protocol: 'submission',
    }).then(
      (res) => {
        if (res.ok) {
          logins.inc({ via: res.via });
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
          const unwatch = deps.revocations.watch(res.account, res.credential, (why) => {
            logger.info(
              { sid: session.id, user: res.account, why },
              'credential no longer valid: session ended',
            );
            deps.closeSession(session.id, reply.credentialRevoked(endedText(why)));
          });
          unwatchCredential.set(session.id, unwatch);
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

  return {
    auth: { methods: ['PLAIN', 'LOGIN'], loginDeadlineMs, onAuth },
    onClose: (session) => {
      unwatchCredential.get(session.id)?.();
      unwatchCredential.delete(session.id);
    },
  };
}
