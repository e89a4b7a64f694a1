/** What onConnectionClose needs of smtp-server's SMTPConnection. */
export interface ClosableConnection {
  /** Runs when the connection's socket closes, the plain one or the TLS one after STARTTLS. */
  _onClose(): void;
}

/**
 * Calls `fn` once when smtp-server's connection closes. A 'close' listener on the socket
 * is not enough: STARTTLS removes every listener from the plain socket (upgrade()), so
 * after it the plain socket's 'close' is never heard.
 */
export function onConnectionClose(conn: ClosableConnection, fn: () => void): void {
  const onClose = conn._onClose.bind(conn);
  let done = false;
  conn._onClose = () => {
    onClose();
    if (done) return;
    done = true;
    fn();
  };
}
