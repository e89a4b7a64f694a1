// What a client's errors cost it, shared by IMAP and POP3: a disconnect after too many
// bad commands, and a bounded number of error log lines per connection.
import type { Logger } from '@mailyard/observability';

/**
 * What a bad command was: `invalid`, no command of the protocol in this state (unknown,
 * not allowed now, malformed, a line too long); `failure`, a command the client could
 * send that failed (a wrong password, an internal error).
 */
export type BadKind = 'invalid' | 'failure';

/**
 * Counts bad commands toward a disconnect, as Dovecot does: imap-login and pop3-login
 * close the connection at the third invalid command, before any login (a defence against
 * cross-protocol attacks such as ALPACA, where a browser or another protocol's client is
 * made to send its lines here, each an invalid command), but not for failed logins; imap
 * and pop3 count errors in a row after it, so a long-lived client's occasional mistake
 * never adds up. Besides, every error before login counts toward the limit after it, as
 * Postfix's smtpd_hard_error_limit does for SMTP.
 */
export class BadCommands {
  private count = 0;
  private invalid = 0;

  constructor(
    /** Errors before login in all, or in a row after it. */
    private readonly limit: number,
    /** Invalid commands before login. */
    private readonly invalidBeforeLogin: number,
  ) {}

  /** One more bad command; true when the session must now be closed. */
  bad(kind: BadKind, authenticated: boolean): boolean {
    if (!authenticated && kind === 'invalid' && ++this.invalid >= this.invalidBeforeLogin) return true;
    return ++this.count >= this.limit;
  }

  /** A command that succeeded: after login it ends a run of errors; before, nothing is forgiven. */
  ok(authenticated: boolean): void {
    if (authenticated) this.count = 0;
  }
}

/** Error lines one connection may log (each carries a stack of about a kilobyte). */
const ERROR_LOG_BUDGET = 5;

/**
 * Logs a connection's unexpected errors, at most ERROR_LOG_BUDGET of them: a client that
 * found a way to make every command fail (or a store that fails under it) costs a few
 * lines and one count at the end, not a kilobyte per command.
 */
export class ErrorLog {
  private left = ERROR_LOG_BUDGET;
  private dropped = 0;

  constructor(private readonly log: Logger) {}

  error(fields: Record<string, unknown>, msg: string): void {
    if (this.left > 0) {
      this.left--;
      this.log.error(fields, msg);
      if (this.left === 0)
        this.log.warn('error log budget of this connection spent: further errors are counted');
    } else this.dropped++;
  }

  /** At the end of the connection: how many errors were not logged. */
  close(): void {
    if (this.dropped) this.log.warn({ unlogged: this.dropped }, 'errors not logged on this connection');
  }
}
