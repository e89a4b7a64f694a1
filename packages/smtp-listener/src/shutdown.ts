import type { Server, Socket } from 'node:net';
import { reply, type SmtpReject } from '@mailyard/smtp-core';
import { onConnectionClose, type ClosableConnection } from './connection-close.js';

/** The parts of smtp-server's SMTPConnection a shutdown needs. */
export interface SessionLike extends ClosableConnection {
  send(code: number, data?: string | string[], context?: string | false): void;
  _onCommand(command: Buffer, callback: () => void): void;
  /** The socket the session talks on (the TLS one after STARTTLS). */
  _socket: Socket;
  /** Ending: told 421 (or QUIT, an error), or the connection closed. */
  _closing: boolean;
  _closed: boolean;
}

/** Replies after which the client goes on within the same command (DATA, AUTH). */
const INTERMEDIATE = new Set([334, 354]);

/** How long a client has to read the last reply before its connection is cut. */
const LAST_WORD_MS = 250;

/**
 * What a publish under way rejects with when the shutdown's deadline came before its
 * answer: whether the broker took the message is unknown. The broker may still take it
 * later: the client, told to send it again, may deliver it twice, never lose it.
 */
export class PublishUnanswered extends Error {
  override readonly name = 'PublishUnanswered';
  constructor() {
    super('the listener stopped before the publish was answered');
  }
}

interface SessionState {
  /** Waits for the client's next command. */
  waiting: boolean;
  /** A message of the session being published: the client must get its outcome. */
  publishing: number;
  /** The 421 to say once the publish is answered. */
  ending: SmtpReject | null;
}

/**
 * The sessions of one listener and whether each waits for its client's next command,
 * so that a shutdown can say goodbye at once to those that wait and let the others
 * finish. smtp-server's own close() waits for every client to leave by itself, which
 * an idle client never does.
 *
 * A session is never told 421 while a message of it is being published (Postfix never
 * commits a message after a 421): the client would send it again. The 421 waits for
 * the publish's answer, and the publish is not begun once the 421 is said (`publishing`).
 */
export class SessionTracker {
  private readonly sessions = new Map<SessionLike, SessionState>();
  /** The publishes under way: each settles with its answer, or is cut short by the shutdown. */
  private readonly publishes = new Map<Promise<unknown>, (err: Error) => void>();
  private stopping = false;

  track(conn: SessionLike): void {
    const state: SessionState = { waiting: false, publishing: 0, ending: null };
    this.sessions.set(conn, state);
    onConnectionClose(conn, () => this.sessions.delete(conn));
    const onCommand = conn._onCommand.bind(conn);
    conn._onCommand = (command, callback) => {
      state.waiting = false;
      onCommand(command, callback);
    };
    const send = conn.send.bind(conn);
    conn.send = (code, data, context) => {
      send(code, data, context);
      if (code === 421 || INTERMEDIATE.has(code)) return;
      // a final reply (the greeting included): the session waits for the client now
      state.waiting = true;
      // once the command's handler is done with the connection
      const ending = state.ending;
      if (ending && !state.publishing) setImmediate(() => this.end(conn, ending));
      else if (this.stopping) setImmediate(() => state.waiting && this.goodbye(conn));
    };
  }

  /**
   * Runs `publish` (a message of session `conn` committed to the queue) unless the session
   * was told 421 or closed; undefined then, nothing run.
   */
  publishing<T>(conn: SessionLike, publish: () => Promise<T>): Promise<T> | undefined {
    const state = this.sessions.get(conn);
    if (!state || conn._closing || conn._closed) return undefined;
    state.publishing++;
    let cut!: (err: Error) => void;
    const answer = new Promise<T>((resolve, reject) => {
      cut = reject;
      publish().then(resolve, reject);
    });
    const p = answer.finally(() => {
      state.publishing--;
      this.publishes.delete(p);
    });
    this.publishes.set(p, cut);
    return p;
  }

  /**
   * Ends the session with `err` (a 421): at once, or while a message of it is being
   * published, after the reply that gives its outcome. smtp-server closes the
   * connection after a 421.
   */
  end(conn: SessionLike, err: SmtpReject): void {
    const state = this.sessions.get(conn);
    if (!state) return;
    if (state.publishing) {
      state.ending ??= err;
      return;
    }
    state.ending = null;
    if (!conn._closing && !conn._closed) conn.send(err.code, err.message);
  }

  /** 421 4.3.2. */
  private goodbye(conn: SessionLike): void {
    this.end(conn, reply.shuttingDown());
  }

  /**
   * Stops `listener` accepting and destroys `pending` sockets (in the PROXY header or the
   * TLS handshake: no session yet). Sessions waiting for a command get `421 4.3.2` at
   * once; the others may finish (a message being received or queued gets its real
   * answer, then 421) for up to `drainMs`; then every session left gets 421 and is cut,
   * those whose message is being published once it is answered. All of it within
   * `stopMs` (at least `drainMs`) from the call: a publish not answered by then (a broker
   * that stopped answering) is cut short with PublishUnanswered, its session told to send
   * the message again, so that a stop never waits for the bus's publish timeout.
   */
  async shutdown(
    listener: Server,
    pending: Iterable<Socket>,
    drainMs: number,
    stopMs: number,
  ): Promise<void> {
    const deadline = performance.now() + Math.max(stopMs, drainMs);
    this.stopping = true;
    const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
    for (const s of pending) s.destroy();
    for (const [conn, state] of this.sessions) if (state.waiting) this.goodbye(conn);
    if (await settledWithin(closed, drainMs)) return;
    for (const conn of this.sessions.keys()) this.goodbye(conn);
    // the answers and the last word to the clients both come before the deadline
    const answered = Promise.allSettled([...this.publishes.keys()]).then(() => undefined);
    const left = deadline - LAST_WORD_MS - performance.now();
    if (!(await settledWithin(answered, Math.max(0, left))))
      for (const cut of this.publishes.values()) cut(new PublishUnanswered());
    if (await settledWithin(closed, LAST_WORD_MS)) return;
    for (const conn of this.sessions.keys()) conn._socket.destroy();
  }
}

/** True when `p` settled within `ms`. */
async function settledWithin(p: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
