import type { SMTPServerSession } from 'smtp-server';
import { reply, type SmtpReject } from '@mailyard/smtp-core';

type Handler = (command: Buffer, callback: () => void) => void;

/** What of smtp-server's connection the AUTH exchange is read from. */
export interface AuthConnection {
  session: SMTPServerSession;
  handler_AUTH: Handler;
  /** The handler of the next line while an AUTH exchange waits for a response (smtp-server's own). */
  _nextHandler: Handler | false;
  send(code: number, message: string): void;
}

/**
 * RFC 4648 §4 base64; the empty string is an empty response. The closing padding may be
 * left out, as some clients do and Dovecot and smtp-server take.
 */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;

/** What a response of the exchange carries: its SASL step decides what it must hold. */
type Step = 'plain' | 'login-username' | 'login-password';

/** smtp-server's handler of the next line names its step (`SASL.PLAIN_token.bind(...)`). */
function stepOf(handler: Handler): Step {
  if (/PLAIN_token/.test(handler.name)) return 'plain';
  return /LOGIN_username/.test(handler.name) ? 'login-username' : 'login-password';
}

/** What smtp-server refuses in a name, too. */
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;

/**
 * What is wrong with a response of an AUTH exchange (RFC 4954 §4), the initial response
 * (`initial`, where "=" stands for an empty one) or a line after a 334; null when smtp-server's
 * SASL (PLAIN, LOGIN) may read it. One that decodes to no credentials at all (not a PLAIN
 * message of RFC 4616 §2, an empty user name, a control character in a name) is refused
 * as wrong credentials (535 5.7.8, as Dovecot answers), not as bad syntax, and never
 * checked.
 */
function responseError(response: string, initial: boolean, step: Step): SmtpReject | null {
  if (initial && response === '=') response = '';
  else if (!BASE64.test(response)) return reply.authBadBase64();
  const data = Buffer.from(response, 'base64').toString();
  switch (step) {
    case 'plain': {
      const fields = data.split('\0');
      // an empty authcid is taken: smtp-server then logs in the authzid, as clients expect
      const [authzid = '', authcid = ''] = fields;
      return fields.length !== 3 || CONTROL.test(authzid + authcid) ? reply.authInvalid() : null;
    }
    case 'login-username':
      return !data || CONTROL.test(data) ? reply.authInvalid() : null;
    case 'login-password':
      return null;
  }
}

/**
 * Checks every response of an AUTH exchange before smtp-server's SASL reads it, which
 * decodes what is not base64 as if it were (a password of garbage, checked and counted
 * as a failed login), and answers a cancel itself. `refused` counts and logs a refusal
 * made here.
 */
export function checkAuthExchange(
  conn: AuthConnection,
  methods: string[],
  refused: (err: SmtpReject, command: string) => void,
): void {
  const refuse = (err: SmtpReject, callback: () => void) => {
    refused(err, 'AUTH');
    conn.send(err.code, err.message);
    callback();
  };
  const auth = conn.handler_AUTH.bind(conn);
  conn.handler_AUTH = (command, callback) => {
    const [, mechanism = '', initial, ...rest] = command.toString('latin1').trim().split(/\s+/);
    // what smtp-server answers itself: logged in (503), a mechanism not offered (504),
    // more than one initial response (501)
    const its = conn.session.user || !methods.includes(mechanism.toUpperCase()) || rest.length;
    // RFC 4954 §4: AUTH mechanism [initial-response]; smtp-server took none for one not offered (504)
    if (!conn.session.user && !mechanism) return refuse(reply.commandSyntax('AUTH mechanism'), callback);
    const step: Step = mechanism.toUpperCase() === 'PLAIN' ? 'plain' : 'login-username';
    const err = its || initial === undefined ? null : responseError(initial, true, step);
    if (err) return refuse(err, callback);
    auth(command, callback);
  };
  // the response to a 334: smtp-server sets the handler of the next line, which reads it
  let next: Handler | false = false;
  Object.defineProperty(conn, '_nextHandler', {
    get: () => next,
    set: (handler: Handler | false) => {
      next =
        handler &&
        ((line, callback) => {
          const response = line.toString('latin1').trim();
          // RFC 4954 §4: "*" cancels the exchange
          const err =
            response === '*' ? reply.authAborted() : responseError(response, false, stepOf(handler));
          if (err) return refuse(err, callback);
          handler(line, callback);
        });
    },
  });
}
