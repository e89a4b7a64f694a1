import type { Server, Socket } from 'node:net';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { ipInNetworks } from '@mailyard/config';
import { reply, type SmtpReject } from '@mailyard/smtp-core';
import { onConnectionClose } from './connection-close.js';
import { watchDeadlines, type ConnectionState, type DeadlineOptions } from './deadlines.js';
import { parseProxyHeader } from './proxy-protocol.js';
import { SessionTracker, type SessionLike } from './shutdown.js';

export { PublishUnanswered } from './shutdown.js';

export interface ListenerOptions extends SMTPServerOptions {
  /** Peers allowed to send a PROXY header (v1 or v2); from anyone else it is an unknown command. */
  proxyTrusted: string[];
  /** Error replies (4xx/5xx) a client may cause before 421 and disconnect (Postfix: smtpd_hard_error_limit). */
  hardErrorLimit: number;
  /**
   * NOOP, RSET, VRFY and HELP a client not logged in may send before each counts as an
   * error (Postfix: smtpd_junk_command_limit); default 100.
   */
  junkCommandLimit?: number;
  /** Early-talker wait before the greeting in ms; 0 disables (Postfix: postscreen_greet_wait). */
  greetingDelay: number;
  /** Called for every error reply, for metrics. */
  onErrorReply?: (code: number) => void;
  /** Per-client connection limits (ClientLimits of @mailyard/auth); none when absent. */
  clientLimits?: ConnectionGate;
  /** A connection refused by clientLimits, for metrics and the log. */
  onClientRefused?: (ip: string, limit: string) => void;
  /** Request and login deadlines (see watchDeadlines); none when absent. */
  deadlines?: DeadlineOptions;
  /**
   * RFC 2920 §3.1 pipelining constraints for a client not logged in (Postfix:
   * smtpd_forbid_unauth_pipelining, on by default since 3.9): input sent after HELO,
   * EHLO, NOOP, VRFY or DATA before their reply, or after any command where PIPELINING
   * was not offered (no EHLO yet, or HELO), is answered 554 5.5.0 and disconnects.
   * Off: only message content sent with DATA is refused so. Default true.
   */
  forbidUnauthPipelining?: boolean;
  /** Called for a refusal made here rather than in a hook (improper pipelining), to count and log it. */
  onReject?: (err: SmtpReject, session: SMTPServerSession, extra: Record<string, unknown>) => void;
}

/** Admits a client's connection or says which limit it is over; an admitted one holds its slot until release(). */
export interface ConnectionGate {
  admit(ip: string): Promise<{ ok: true; release: () => void } | { ok: false; limit: string }>;
}

interface SocketOptions {
  id: string;
  remoteAddress?: string;
  remotePort?: number;
  ignore?: boolean;
  /** Over a client limit on an implicit-TLS listener: answered once the handshake is done. */
  refusal?: SmtpReject;
  /** Gives back the client's connection slot (see admit); safe to call more than once. */
  release?: () => void;
}

interface ConnectionLike extends SessionLike {
  /** The session id (session.id). */
  id: string;
  session: SMTPServerSession;
  /** smtp-server's SMTPStream: a Writable the socket is piped into. */
  _parser?: { pipelinedInput?: string; writableBuffer?: unknown[] } | false;
  /** smtp-server's command dispatcher (called by the parser for each line). */
  _onCommand(command: Buffer, callback?: () => void): void;
  /** Set while the next line is the continuation of an AUTH exchange, not a command. */
  _nextHandler?: unknown;
  /** The TLS handshake of STARTTLS is running: smtp-server drops what arrives meanwhile. */
  _upgrading?: boolean;
  /** The greeting was sent. */
  _ready?: boolean;
  /** The last of HELO and EHLO the client sent (smtp-server's field); undefined before either. */
  openingCommand?: string;
  close(): void;
  handler_DATA(command: Buffer, callback: () => void): void;
  handler_MAIL(command: Buffer, callback: () => void): void;
  handler_RCPT(command: Buffer, callback: () => void): void;
  _parseAddressCommand(
    name: string,
    command: Buffer,
  ): { args: Record<string, string | true> | false } | false;
  handler_NOOP(command: Buffer, callback: () => void): void;
  handler_RSET(command: Buffer, callback: () => void): void;
  handler_VRFY(command: Buffer, callback: () => void): void;
  handler_HELP(command: Buffer, callback: () => void): void;
}

/** Commands that move no mail: Postfix's junk commands (it counts ETRN too, which we do not offer). */
const JUNK_COMMANDS = ['NOOP', 'RSET', 'VRFY', 'HELP'] as const;

/**
 * RFC 2920 §3.1: commands that may only be the last of a pipelined group, those of the
 * list we answer (EXPN and TURN are unknown commands here, as in Postfix). QUIT is left
 * out as Postfix leaves it: it ends the session anyway, and what follows it is never read.
 */
const GROUP_ENDERS = new Set(['HELO', 'EHLO', 'NOOP', 'VRFY', 'DATA']);

const PROXY_HEADER_TIMEOUT_MS = 10_000;
/** How long a client refused on an implicit-TLS listener has to finish its handshake and read the 421. */
const REFUSED_HANDSHAKE_MS = 10_000;

/**
 * smtp-server with what a port-25/587 listener needs beyond it:
 *  - PROXY protocol v1 and v2, only from trusted proxies (smtp-server reads v1 only);
 *    a header without a client address (v2 LOCAL, v1 UNKNOWN) is refused, so traffic
 *    through a proxy is never mistaken for the proxy's own (trusted) address;
 *  - a hard error limit: after N error replies the client gets 421 and is disconnected;
 *  - per-client connection limits (count and rate, see `admit`);
 *  - deadlines for a whole command line, the message and the login (watchDeadlines);
 *  - commands pipelined where RFC 2920 §3.1 forbids it by a client not logged in
 *    (Postfix's smtpd_forbid_unauth_pipelining), and message content sent before the
 *    354 in any case: 554 and disconnect, nothing queued;
 *  - a shutdown that tells every client 421 4.3.2 within a deadline (`shutdown()`), a
 *    client whose message the broker has not confirmed by then included.
 */
export class MailyardSmtpServer extends SMTPServer {
  private readonly proxyTrusted: string[];
  private readonly hardErrorLimit: number;
  private readonly junkCommandLimit: number;
  private readonly forbidUnauthPipelining: boolean;
  private readonly onErrorReply: ((code: number) => void) | undefined;
  private readonly tracker = new SessionTracker();

  private readonly clientLimits: ConnectionGate | undefined;
  private readonly deadlines: DeadlineOptions | undefined;
  private readonly onClientRefused: ((ip: string, limit: string) => void) | undefined;
  protected readonly onReject: ListenerOptions['onReject'];
  /** TLS from the first byte (465): nothing can be said before the handshake. */
  private readonly implicitTls: boolean;
  private readonly refusedHandshakes = new WeakMap<object, NodeJS.Timeout>();

  constructor(options: ListenerOptions) {
    const {
      proxyTrusted,
      hardErrorLimit,
      junkCommandLimit,
      forbidUnauthPipelining,
      greetingDelay,
      onErrorReply,
      clientLimits,
      onClientRefused,
      deadlines,
      onReject,
      ...rest
    } = options;
    super({ ...rest, useProxy: false, greetingDelay } as SMTPServerOptions);
    this.proxyTrusted = proxyTrusted;
    this.hardErrorLimit = hardErrorLimit;
    this.junkCommandLimit = junkCommandLimit ?? 100;
    this.forbidUnauthPipelining = forbidUnauthPipelining ?? true;
    this.onErrorReply = onErrorReply;
    this.onReject = onReject;
    this.clientLimits = clientLimits;
    this.onClientRefused = onClientRefused;
    this.deadlines = deadlines;
    this.implicitTls = !!rest.secure && !rest.needsUpgrade;
  }

  /**
   * Per-client limits, once the client's address is known (after a PROXY header): over
   * a limit, 421 4.7.0 and close (Postfix: "too many connections from"). On an
   * implicit-TLS listener the 421 waits for the handshake, which must be done within
   * REFUSED_HANDSHAKE_MS. The slot is held until the connection closes.
   */
  private admit(
    socket: Socket,
    opts: SocketOptions,
    callback: (err: Error | null, opts?: SocketOptions) => void,
  ): void {
    const gate = this.clientLimits;
    if (!gate) return callback(null, opts);
    const ip = (opts.remoteAddress ?? socket.remoteAddress ?? '').replace(/^::ffff:/i, '');
    void gate.admit(ip).then((a) => {
      if (a.ok) {
        let held = true;
        const release = () => {
          if (held) a.release();
          held = false;
        };
        if (socket.destroyed) release();
        else {
          // until there is a session (the PROXY header or the TLS handshake may still
          // fail); connect() hands the slot to the session, whose close STARTTLS keeps
          socket.once('close', release);
          opts.release = release;
        }
        return callback(null, opts);
      }
      this.onClientRefused?.(ip, a.limit);
      const refusal = reply.tooManyConnections(ip);
      if (this.implicitTls) {
        opts.refusal = refusal;
        const timer = setTimeout(() => socket.destroy(), REFUSED_HANDSHAKE_MS);
        timer.unref();
        this.refusedHandshakes.set(opts, timer);
        return callback(null, opts);
      }
      socket.on('error', () => undefined);
      socket.end(`${refusal.line}\r\n`);
      setTimeout(() => socket.destroy(), 1000).unref();
      callback(new Error(`${ip}: over the ${a.limit} limit`));
    });
  }

  // Replaces smtp-server's v1-only reader (same contract: callback(err, socketOptions)).
  override _handleProxy(socket: Socket, done: (err: Error | null, opts?: SocketOptions) => void): void {
    const callback = (err: Error | null, o?: SocketOptions) =>
      err || !o ? done(err, o) : this.admit(socket, o, done);
    const opts: SocketOptions = { id: randomId() };
    const peer = socket.remoteAddress ?? '';
    if (!this.proxyTrusted.length || !ipInNetworks(peer, this.proxyTrusted)) {
      setImmediate(() => callback(null, opts));
      return;
    }
    let buf = Buffer.alloc(0);
    let finished = false;
    const finish = (err: Error | null) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('error', onFail);
      socket.removeListener('close', onFail);
      if (err) {
        socket.on('error', () => undefined);
        socket.end(`${reply.proxyRefused().line}\r\n`);
        setTimeout(() => socket.destroy(), 200).unref();
        callback(err);
        return;
      }
      socket.pause();
      callback(null, opts);
    };
    const onFail = () => finish(new Error('connection closed before the PROXY header'));
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const r = parseProxyHeader(buf);
      if (r.status === 'incomplete') return;
      if (r.status === 'invalid') return finish(new Error(`invalid PROXY header: ${r.reason}`));
      if (r.header.kind === 'local') return finish(new Error('PROXY header carries no client address'));
      opts.remoteAddress = r.header.sourceAddress;
      opts.remotePort = r.header.sourcePort;
      const rest = buf.subarray(r.consumed);
      if (rest.length) socket.unshift(rest);
      finish(null);
    };
    const timer = setTimeout(() => finish(new Error('no PROXY header in time')), PROXY_HEADER_TIMEOUT_MS);
    socket.on('data', onData);
    socket.once('error', onFail);
    socket.once('close', onFail);
  }

  /**
   * Ends the session `id` (smtp-server's session.id) with a 421 reply, if it is on this
   * server; true when it was. The reply is sent whatever the session is doing, except
   * publishing a message: then after the reply that gives its outcome.
   */
  closeSession(id: string, err: SmtpReject): boolean {
    for (const conn of this.sessions<ConnectionLike>()) {
      if (conn.id !== id) continue;
      this.tracker.end(conn, err);
      return true;
    }
    return false;
  }

  /**
   * Runs `publish` (a message of `session` committed to the queue) if the session is open
   * on this listener; undefined, nothing run, when it is not here, or its client was told
   * 421 or left: a client told 421 sends the message again. A 421 (a shutdown,
   * closeSession) waits for the publish's answer; a shutdown whose deadline comes first
   * rejects it with PublishUnanswered.
   */
  publishFor<T>(session: SMTPServerSession, publish: () => Promise<T>): Promise<T> | undefined {
    for (const conn of this.sessions<ConnectionLike>())
      if (conn.session === session) return this.tracker.publishing(conn, publish);
    return undefined;
  }

  /**
   * The session smtp-server just made of `socket` in connect(); undefined when there is
   * none, as when over maxClients it was answered 421 and dropped at once (the last
   * session then is an older one).
   */
  protected connectionOf<T extends { _socket: Socket }>(socket: Socket): T | undefined {
    const conn = [...this.sessions<T>()].at(-1);
    return conn?._socket === socket ? conn : undefined;
  }

  /** smtp-server's open connections, in the order they were made (its own field). */
  private sessions<T>(): Set<T> {
    return (this as unknown as { connections: Set<T> }).connections;
  }

  override connect(socket: Socket, socketOptions: SocketOptions): void {
    super.connect(socket, socketOptions);
    clearTimeout(this.refusedHandshakes.get(socketOptions));
    const conn = this.connectionOf<ConnectionLike>(socket);
    if (!conn) return;
    if (socketOptions.release) onConnectionClose(conn, socketOptions.release);
    if (socketOptions.refusal) {
      this.onErrorReply?.(421);
      conn.send(421, socketOptions.refusal.message);
      return;
    }
    const send = conn.send.bind(conn);
    let errors = 0;
    /** One more error; true when it is the last one allowed, and the client was told 421. */
    const overErrors = (): boolean => {
      if (++errors < this.hardErrorLimit) return false;
      this.onErrorReply?.(421);
      send(421, reply.tooManyErrors().message);
      return true;
    };
    // unknown commands are errors like the others, up to smtpd_hard_error_limit as in
    // Postfix: smtp-server's own cap (421 at the 10th, 4.4.2) would cut in first
    Object.defineProperty(conn, '_unrecognizedCommands', { get: () => 0, set: () => undefined });
    // RFC 5321 §3.5.3: 252, the address is not verified; smtp-server's 2.1.5 (RFC 3463:
    // "destination address valid") would claim it is, Postfix says 2.0.0
    const vrfy = conn.handler_VRFY.bind(conn);
    conn.handler_VRFY = (command, callback) => {
      if (!/^VRFY\s+\S/i.test(command.toString('latin1'))) return vrfy(command, callback);
      conn.send(252, '2.0.0 Cannot VRFY user, but will accept message and attempt delivery');
      callback();
    };
    let junk = 0;
    conn.send = (code, data, context) => {
      // a message accepted forgives what came before, as Postfix does: a sender that
      // resets between the messages of a long session is not cut off
      if (context === 'DATA_OK') errors = junk = 0;
      // every error reply is counted, temporary ones (421, 451) too; only those that
      // answer the client's commands count towards the hard error limit
      if (code >= 400) this.onErrorReply?.(code);
      const sent = send(code, data, context);
      if (code >= 400 && code !== 421) overErrors();
      return sent;
    };
    // each junk command restarts smtpd_timeout: past the limit they count as errors, so
    // such commands cannot hold a connection slot for ever (Postfix does the same)
    for (const name of JUNK_COMMANDS) {
      const handler = conn[`handler_${name}`].bind(conn);
      conn[`handler_${name}`] = (command, callback) => {
        if (!conn.session.user && ++junk > this.junkCommandLimit && overErrors()) return callback();
        handler(command, callback);
      };
    }
    // RFC 5321 §4.1.1.11: parameters of extensions not offered are 555, where smtp-server
    // takes any it does not know. A command not of the form `MAIL FROM:<path>` or
    // `RCPT TO:<path>` at all is bad command syntax (5.5.4, Postfix's "Syntax: MAIL
    // FROM:<address>"), not a bad address (5.1.7, 5.1.3), which smtp-server answers to
    // both. Either is checked where the command comes in order, as Postfix does: out of
    // order, the order is what is wrong (503).
    for (const [name, verb, form] of [
      ['MAIL', 'mail from', /^MAIL\s+FROM:\s*\S/i],
      ['RCPT', 'rcpt to', /^RCPT\s+TO:\s*\S/i],
    ] as const) {
      const handler = conn[`handler_${name}`].bind(conn);
      conn[`handler_${name}`] = (command, callback) => {
        const inOrder = !!conn.session.envelope.mailFrom === (name === 'RCPT');
        const syntax = !form.test(command.toString('latin1'));
        if (syntax && !inOrder) {
          conn.send(503, name === 'MAIL' ? 'Error: nested MAIL command' : 'Error: need MAIL command');
          return callback();
        }
        const parsed = syntax || !inOrder ? false : conn._parseAddressCommand(verb, command);
        const bad = parsed && parsed.args ? this.unsupportedParameter(name, parsed.args) : null;
        if (!syntax && !bad) return handler(command, callback);
        const err = bad
          ? reply.unsupportedParameter(bad)
          : reply.commandSyntax(`${verb.toUpperCase()}:<address>`);
        this.onReject?.(err, conn.session, { command: name });
        conn.send(err.code, err.message);
        callback();
      };
    }
    /** 554 5.5.0 and close for input that came before the reply to `verb` (Postfix's words). */
    const synchronizationError = (verb: string, input: string, callback?: () => void) => {
      const err = reply.improperPipelining();
      this.onReject?.(err, conn.session, { after: verb, input });
      this.onErrorReply?.(err.code);
      send(err.code, err.message);
      conn.close();
      callback?.();
    };
    if (this.forbidUnauthPipelining) {
      const onCommand = conn._onCommand.bind(conn);
      conn._onCommand = (command, callback) => {
        // a line of an AUTH exchange is not a command, nor is plaintext that STARTTLS drops
        // (and before the greeting smtp-server answers an early talker itself)
        if (conn.session.user || conn._nextHandler || conn._upgrading || !conn._ready)
          return onCommand(command, callback);
        const verb = /^\S*/.exec(command.toString('latin1'))![0].toUpperCase();
        // RFC 2920 §3.1: a group ends with one of GROUP_ENDERS, and there are no groups
        // where PIPELINING was not offered (before EHLO, after HELO). Checked before the
        // command runs, as Postfix does: the command is not answered. A client that
        // logged in is trusted to know what it does.
        const early = GROUP_ENDERS.has(verb) || conn.openingCommand !== 'EHLO' ? pipelinedAfter(conn) : null;
        if (early === null) return onCommand(command, callback);
        synchronizationError(verb, early, callback);
      };
    }
    const data = conn.handler_DATA.bind(conn);
    conn.handler_DATA = (command, callback) => {
      const early = pipelinedAfter(conn);
      // RFC 2920 §3.1: DATA ends a pipelined group; content before the 354 is a client that
      // does not wait for replies (a spam engine, or a smuggling attempt), refused even
      // with forbidUnauthPipelining off, where content could be taken as commands.
      if (early === null || conn.session.user) return data(command, callback);
      synchronizationError('DATA', early, callback);
    };
    if (this.deadlines) watchDeadlines(conn as unknown as ConnectionState, this.deadlines);
    this.tracker.track(conn);
  }

  /** The first parameter of `args` that no extension offered here takes, as written; null when none. */
  private unsupportedParameter(command: 'MAIL' | 'RCPT', args: Record<string, string | true>): string | null {
    const o = this.options;
    for (const [key, value] of Object.entries(args)) {
      const written = value === true ? key : `${key}=${value}`;
      const offered =
        command === 'MAIL'
          ? (key === 'SIZE' && !o.hideSize) ||
            // RFC 6152; BINARYMIME needs CHUNKING (RFC 3030), which smtp-server has not
            (key === 'BODY' && typeof value === 'string' && /^(7BIT|8BITMIME)$/i.test(value)) ||
            (key === 'SMTPUTF8' && !o.hideSMTPUTF8) ||
            // RFC 4954 §5; where AUTH is not offered it is taken and ignored, as Postfix
            // does: a sender that adds AUTH=<> to every MAIL would otherwise bounce (5xx)
            key === 'AUTH' ||
            ((key === 'RET' || key === 'ENVID') && !o.hideDSN) ||
            (key === 'REQUIRETLS' && !o.hideREQUIRETLS)
          : (key === 'NOTIFY' || key === 'ORCPT') && !o.hideDSN;
      if (!offered) return written;
    }
    return null;
  }

  /**
   * Stops the listener: clients may finish for `drainMs`, and the whole stop, answers of
   * messages being queued included, takes at most `stopMs` and a moment (see
   * SessionTracker.shutdown); use instead of close().
   */
  shutdown(drainMs: number, stopMs: number): Promise<void> {
    const self = this as unknown as { server: Server; _pendingSockets: Map<unknown, Socket> };
    return this.tracker.shutdown(self.server, self._pendingSockets.values(), drainMs, stopMs);
  }
}

/** What the client sent after the command being handled without waiting for its reply; null if nothing. */
function pipelinedAfter(conn: ConnectionLike): string | null {
  const parser = conn._parser;
  if (!parser) return null;
  if (parser.pipelinedInput) return parser.pipelinedInput;
  // later reads, queued (beyond the read being parsed) while this command waited its turn
  return parser.writableBuffer?.length ? '' : null;
}

function randomId(): string {
  return Math.random().toString(36).slice(2, 10) + Date.now().toString(36);
}
