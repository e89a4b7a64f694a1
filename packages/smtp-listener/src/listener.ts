import type { Socket } from 'node:net';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { ipInNetworks } from '@mailyard/config';
import { reply, type SmtpReject } from '@mailyard/smtp-core';
import { parseProxyHeader } from './proxy-protocol.js';

export interface ListenerOptions extends SMTPServerOptions {
  /** Peers allowed to send a PROXY header (v1 or v2); from anyone else it is an unknown command. */
  proxyTrusted: string[];
  /** Error replies (4xx/5xx) a client may cause before 421 and disconnect (Postfix: smtpd_hard_error_limit). */
  hardErrorLimit: number;
  /** Early-talker wait before the greeting in ms; 0 disables (Postfix: postscreen_greet_wait). */
  greetingDelay: number;
  /** Called for every error reply, for metrics. */
  onErrorReply?: (code: number) => void;
  /** Called for a refusal made here rather than in a hook (improper pipelining), to count and log it. */
  onReject?: (err: SmtpReject, session: SMTPServerSession, extra: Record<string, unknown>) => void;
}

interface SocketOptions {
  id: string;
  remoteAddress?: string;
  remotePort?: number;
  ignore?: boolean;
}

interface ConnectionLike {
  session: SMTPServerSession;
  /** smtp-server's SMTPStream: a Writable the socket is piped into. */
  _parser?: { pipelinedInput?: string; writableBuffer?: unknown[] } | false;
  send(code: number, data?: string | string[], context?: string | false): void;
  close(): void;
  handler_DATA(command: Buffer, callback: () => void): void;
}

const PROXY_HEADER_TIMEOUT_MS = 10_000;

/**
 * smtp-server with what a port-25/587 listener needs beyond it:
 *  - PROXY protocol v1 and v2, only from trusted proxies (smtp-server reads v1 only);
 *    a header without a client address (v2 LOCAL, v1 UNKNOWN) is refused, so traffic
 *    through a proxy is never mistaken for the proxy's own (trusted) address;
 *  - a hard error limit: after N error replies the client gets 421 and is disconnected;
 *  - message content sent before the 354 (Postfix's smtpd_forbid_unauth_pipelining): 554
 *    and disconnect, nothing queued.
 */
export class MailyardSmtpServer extends SMTPServer {
  private readonly proxyTrusted: string[];
  private readonly hardErrorLimit: number;
  private readonly onErrorReply: ((code: number) => void) | undefined;
  private readonly onReject: ListenerOptions['onReject'];

  constructor(options: ListenerOptions) {
    const { proxyTrusted, hardErrorLimit, greetingDelay, onErrorReply, onReject, ...rest } = options;
    super({ ...rest, useProxy: false, greetingDelay } as SMTPServerOptions);
    this.proxyTrusted = proxyTrusted;
    this.hardErrorLimit = hardErrorLimit;
    this.onErrorReply = onErrorReply;
    this.onReject = onReject;
  }

  // Replaces smtp-server's v1-only reader (same contract: callback(err, socketOptions)).
  override _handleProxy(socket: Socket, callback: (err: Error | null, opts?: SocketOptions) => void): void {
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

  override connect(socket: Socket, socketOptions: SocketOptions): void {
    super.connect(socket, socketOptions);
    const conn = [...(this as unknown as { connections: Set<ConnectionLike> }).connections].at(-1);
    if (!conn) return;
    const send = conn.send.bind(conn);
    let errors = 0;
    conn.send = (code, data, context) => {
      if (code >= 400 && code !== 421) {
        this.onErrorReply?.(code);
        errors++;
        if (errors >= this.hardErrorLimit) {
          send(code, data, context);
          return send(421, reply.tooManyErrors().message);
        }
      }
      return send(code, data, context);
    };
    const data = conn.handler_DATA.bind(conn);
    conn.handler_DATA = (command, callback) => {
      const early = pipelinedAfter(conn);
      // RFC 2920 §3.1: DATA ends a pipelined group; content before the 354 is a client that
      // does not wait for replies (a spam engine, or a smuggling attempt). Postfix >= 3.9
      // (smtpd_forbid_unauth_pipelining) answers 554 5.5.0 and disconnects; a client that
      // logged in is trusted to know what it does.
      if (early === null || conn.session.user) return data(command, callback);
      const err = reply.improperPipelining();
      this.onReject?.(err, conn.session, { after: 'DATA', input: early });
      this.onErrorReply?.(err.code);
      send(err.code, err.message);
      conn.close();
      callback();
    };
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
