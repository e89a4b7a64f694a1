import type { Socket } from 'node:net';
import { MailyardSmtpServer, type ListenerOptions } from '@mailyard/smtp-listener';

interface ConnectionLike {
  _socket: Socket;
  secure: boolean;
  session: { disabledCommands?: string[] };
  handler_EHLO(command: Buffer, callback: () => void): void;
}

/**
 * The listener with one submission rule smtp-server lacks: AUTH is not advertised
 * in EHLO before TLS (RFC 6409 §4.3 / RFC 8314 §3.2: no credentials over cleartext;
 * a client that sees no AUTH never offers its password). smtp-server already refuses
 * the AUTH command itself before STARTTLS (538 5.7.0) when allowInsecureAuth is off.
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
}
