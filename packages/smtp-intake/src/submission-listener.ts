import type { Socket } from 'node:net';
import type { SMTPServerSession } from 'smtp-server';
import { reply } from '@mailyard/smtp-core';
import { MailyardSmtpServer, type ListenerOptions } from '@mailyard/smtp-listener';
import { checkAuthExchange, type AuthConnection } from './auth-exchange.js';

type Handler = (command: Buffer, callback: () => void) => void;

interface ConnectionLike extends AuthConnection {
  _socket: Socket;
  secure: boolean;
  session: SMTPServerSession & { disabledCommands?: string[] };
  handler_EHLO: Handler;
}

/**
 * RFC 3207 §4: the commands a client that must start TLS may still send (and HELO, which
 * Postfix takes too); smtp-server's handlers of the others are answered 530.
 */
const BEFORE_TLS = new Set(['EHLO', 'HELO', 'NOOP', 'STARTTLS', 'QUIT']);

/**
 * The listener with the submission rules smtp-server lacks before TLS (RFC 6409 §4.3,
 * RFC 8314 §3.2: no credentials over cleartext): AUTH is not advertised in EHLO (a client
 * that sees no AUTH never offers its password), and every command but those of
 * BEFORE_TLS is answered 530 5.7.0, as RFC 3207 §4 asks of a server that requires TLS.
 * The responses of an AUTH exchange are checked before smtp-server's SASL reads them
 * (checkAuthExchange).
 */
export class SubmissionSmtpServer extends MailyardSmtpServer {
  constructor(options: ListenerOptions) {
    super({ ...options, allowInsecureAuth: false });
  }

  private serverDisabled(): string[] {
    return (this as unknown as { options: { disabledCommands?: string[] } }).options.disabledCommands ?? [];
  }

  override connect(socket: Socket, socketOptions: Parameters<MailyardSmtpServer['connect']>[1]): void {
    super.connect(socket, socketOptions);
    const conn = this.connectionOf<ConnectionLike>(socket);
    if (!conn) return;
    checkAuthExchange(conn, this.options.authMethods ?? [], (err, command) =>
      this.onReject?.(err, conn.session, { command }),
    );
    // outermost: before TLS, an AUTH of any form is 530, its syntax not even read
    if (!conn.secure) this.requireTls(conn);
    const ehlo = conn.handler_EHLO.bind(conn);
    conn.handler_EHLO = (command, callback) => {
      if (conn.secure) return ehlo(command, callback);
      // the EHLO handler reads the session's disabled commands synchronously
      const before = conn.session.disabledCommands;
      conn.session.disabledCommands = [...(before ?? this.serverDisabled()), 'AUTH'];
      try {
        ehlo(command, callback);
      } finally {
        if (before === undefined) delete conn.session.disabledCommands;
        else conn.session.disabledCommands = before;
      }
    };
  }

  /** Answers smtp-server's handlers but those of BEFORE_TLS with 530 until TLS is up. */
  private requireTls(conn: ConnectionLike): void {
    const handlers = conn as unknown as Record<string, Handler>;
    const names = new Set<string>();
    for (let proto: unknown = Object.getPrototypeOf(conn); proto; proto = Object.getPrototypeOf(proto))
      for (const key of Object.getOwnPropertyNames(proto)) names.add(key);
    for (const key of names) {
      const name = /^handler_(.+)$/.exec(key)?.[1];
      if (!name || BEFORE_TLS.has(name)) continue;
      // the handler as it is now: MailyardSmtpServer's own where it put one in
      const handler = handlers[key]!.bind(conn);
      handlers[key] = (command, callback) => {
        if (conn.secure) return handler(command, callback);
        const err = reply.tlsRequired();
        this.onReject?.(err, conn.session, { command: name });
        conn.send(err.code, err.message);
        callback();
      };
    }
  }
}
