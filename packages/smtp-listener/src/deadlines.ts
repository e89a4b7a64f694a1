import type { Socket } from 'node:net';
import { reply, type SmtpReject } from '@mailyard/smtp-core';
import { onConnectionClose, type ClosableConnection } from './connection-close.js';

/** What the deadlines read of smtp-server's SMTPConnection (its own fields, stable in 3.x). */
export interface ConnectionState extends ClosableConnection {
  id: string;
  session: { user?: unknown };
  send(code: number, data?: string | string[], context?: string | false): void;
  _onCommand(command: Buffer, callback?: () => void): void;
  _socket: Socket;
  _ready: boolean;
  _closing: boolean;
  _closed: boolean;
  _handlerPending?: boolean;
  _dataStream: unknown;
  _parser: { _dataMode: boolean; dataBytes: number } | false;
}

export interface DeadlineOptions {
  /**
   * Time for a whole command line, or for the message at smtpd_min_data_rate (Postfix's
   * smtpd_per_request_deadline with smtpd_timeout); 0: idle timeout only.
   */
  requestMs: number;
  /** Bytes a second the message must arrive at: each byte adds 1/rate s, never beyond requestMs ahead. */
  minDataRate: number;
  /** Time from connect to a successful AUTH; 0: none. */
  loginMs: number;
  onTimeout?: (kind: 'request' | 'login') => void;
}

/**
 * Deadlines that a client trickling a byte at a time cannot stretch: smtp-server's
 * socket timeout counts only idle time, so a byte every few seconds kept a session
 * forever.
 *
 * Request deadline (Postfix 3.7's smtpd_per_request_deadline): after each reply of ours
 * and each command line received, the next command line must be complete within
 * `requestMs`, however its bytes are spaced. During DATA each chunk read earns
 * bytes / minDataRate seconds (smtpd_min_data_rate), never beyond `requestMs` from
 * now, so a message at a reasonable rate always fits and one at a byte a second does
 * not. Time the server takes (a handler or the message decision pending, the greeting
 * not sent yet) is not the client's: the deadline waits for our reply.
 *
 * Login deadline: a session must authenticate within `loginMs` of connecting (the
 * total time before authentication, as Dovecot's login processes give 3 minutes).
 *
 * Both end the session with 421 (4.4.2 for the request, as Postfix's "timeout
 * exceeded"; 4.7.0 for the login).
 */
export function watchDeadlines(conn: ConnectionState, opts: DeadlineOptions): void {
  let loginTimer: NodeJS.Timeout | undefined;
  let requestTimer: NodeJS.Timeout | undefined;
  const expire = (kind: 'request' | 'login', err: SmtpReject) => {
    if (conn._closing || conn._closed) return;
    opts.onTimeout?.(kind);
    conn.send(err.code, err.message);
  };

  if (opts.loginMs > 0) {
    loginTimer = setTimeout(() => {
      if (!conn.session.user) expire('login', reply.loginTimeout());
    }, opts.loginMs);
    loginTimer.unref();
  }

  if (opts.requestMs > 0) {
    let deadline = 0;
    let bytesSeen = 0;
    const schedule = () => {
      clearTimeout(requestTimer);
      requestTimer = setTimeout(check, Math.max(0, deadline - Date.now()));
      requestTimer.unref();
    };
    const restart = () => {
      deadline = Date.now() + opts.requestMs;
      bytesSeen = conn._parser ? conn._parser.dataBytes : 0;
      schedule();
    };
    const check = () => {
      if (conn._closing || conn._closed) return;
      const now = Date.now();
      const parser = conn._parser;
      const serverTurn =
        !conn._ready || conn._handlerPending || (!!conn._dataStream && !!parser && !parser._dataMode);
      if (serverTurn) {
        // checked again later; our reply restarts the deadline
        deadline = now + opts.requestMs;
        return schedule();
      }
      if (parser && parser._dataMode) {
        const earned = ((parser.dataBytes - bytesSeen) / opts.minDataRate) * 1000;
        bytesSeen = parser.dataBytes;
        deadline = Math.min(deadline + earned, now + opts.requestMs);
      }
      if (deadline > now) return schedule();
      expire('request', reply.timeoutExceeded());
    };
    const send = conn.send.bind(conn);
    conn.send = (code, data, context) => {
      send(code, data, context);
      restart();
    };
    const onCommand = conn._onCommand.bind(conn);
    conn._onCommand = (command, callback) => {
      restart();
      onCommand(command, callback);
    };
    restart();
  }

  onConnectionClose(conn, () => {
    clearTimeout(loginTimer);
    clearTimeout(requestTimer);
  });
}
