import { MAX_ENVELOPE_RECIPIENT_BYTES, envelopeAddressBytes, envelopeRecipientBytes } from '@mailyard/bus';

/** Where a recipient's copy goes: the local mailboxes, or another server. */
export type Route = 'delivery' | 'outbound';

/**
 * What the intake has learnt about the transaction in progress, MAIL FROM to the end
 * of DATA, as plain data of its own: smtp-server's session and address objects are
 * read, never written to.
 */
export interface Transaction {
  /**
   * RCPT commands so far. smtp-server folds duplicate addresses in `envelope.rcptTo`;
   * Postfix's smtpd_recipient_limit counts commands, and so do we.
   */
  rcptCommands: number;
  /** The route of each accepted recipient, by address in lower case (smtp-server folds case too). */
  routes: Map<string, Route>;
  /** What the accepted recipients of each route take in the envelope (see envelopeHasRoom). */
  routeBytes: Record<Route, number>;
}

/**
 * Transactions keyed weakly on the session's envelope object, which smtp-server
 * replaces on RSET, HELO/EHLO and at the end of a message: a new envelope, a new
 * transaction, and nothing to clean up.
 */
export class Transactions {
  private readonly byEnvelope = new WeakMap<object, Transaction>();

  /** The transaction of an smtp-server session (only its envelope is read), created on first use. */
  of(session: { envelope: object }): Transaction {
    let tx = this.byEnvelope.get(session.envelope);
    if (!tx) {
      tx = { rcptCommands: 0, routes: new Map(), routeBytes: { delivery: 0, outbound: 0 } };
      this.byEnvelope.set(session.envelope, tx);
    }
    return tx;
  }
}

/**
 * The recipients of the transaction by route, in the order smtp-server kept them. A
 * recipient without a route never passed RCPT here: an error, not a default.
 */
export function routesOf(tx: Transaction, recipients: string[]): Record<Route, string[]> {
  const routes: Record<Route, string[]> = { delivery: [], outbound: [] };
  for (const r of recipients) {
    const route = tx.routes.get(r.toLowerCase());
    if (!route) throw new Error(`recipient ${r} has no route`);
    routes[route].push(r);
  }
  return routes;
}

/**
 * Whether the message can still take `recipient` on `route`: the envelope of what is
 * accepted must fit the queue's header (MAX_ENVELOPE_RECIPIENT_BYTES), or the message
 * could never be queued and every DATA would end in 451. A recipient already taken fits.
 * `filing`: a policy is asked, whose verdict at DATA may list the local ones for Junk.
 */
export function envelopeHasRoom(
  tx: Transaction,
  recipient: string,
  route: Route,
  opts: { filing: boolean },
): boolean {
  if (tx.routes.has(recipient.toLowerCase())) return true;
  const bytes = { ...tx.routeBytes };
  bytes[route] += envelopeAddressBytes(recipient);
  return envelopeRecipientBytes(bytes, opts) <= MAX_ENVELOPE_RECIPIENT_BYTES;
}

/** Takes `recipient` into the transaction on `route`. */
export function addRoute(tx: Transaction, recipient: string, route: Route): void {
  const key = recipient.toLowerCase();
  if (!tx.routes.has(key)) tx.routeBytes[route] += envelopeAddressBytes(recipient);
  tx.routes.set(key, route);
}
