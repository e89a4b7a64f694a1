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

/** RFC 4648 §4 base64, padded; the empty string is an empty response. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * What is wrong with a response of an AUTH exchange (RFC 4954 §4), the initial response
 * (`initial`, where "=" stands for an empty one) or a line after a 334; null when smtp-server's
 * SASL (PLAIN, LOGIN) may read it.
 */
function responseError(response: string, initial: boolean): SmtpReject | null {
  if (initial && response === '=') return null;
  if (!BASE64.test(response)) return reply.authBadBase64();
  return null;
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
  const refuse = (err: SmtpReject, command: string, callback: () => void) => {
    refused(err, command);
    conn.send(err.code, err.message);
    callback();
  };
  const auth = conn.handler_AUTH.bind(conn);
  conn.handler_AUTH = (command, callback) => {
    const [, mechanism = '', initial, ...rest] = command.toString('latin1').trim().split(/\s+/);
    // what smtp-server answers itself: logged in (503), a mechanism not offered (504),
    // more than one initial response (501)
    const its = conn.session.user || !methods.includes(mechanism.toUpperCase()) || rest.length;
    const err = its || initial === undefined ? null : responseError(initial, true);
    if (err) return refuse(err, 'AUTH', callback);
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
          const err = response === '*' ? reply.authAborted() : responseError(response, false);
          if (err) return refuse(err, 'AUTH', callback);
          handler(line, callback);
        });
    },
  });
}
