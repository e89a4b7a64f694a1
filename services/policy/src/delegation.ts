import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { PolicyDecision, PolicyRequestInput, PolicyStage } from '@mailyard/contracts';
import type { Logger } from '@mailyard/observability';

/**
 * The Postfix policy delegation protocol (SMTPD_POLICY_README): the client sends
 * `name=value` lines and an empty line; we answer `action=...` and an empty line,
 * on the same connection as often as asked. Lets an existing Postfix use our rules
 * with `check_policy_service inet:HOST:PORT`.
 *
 * Postfix asks at DATA from smtpd_data_restrictions (every RCPT answered, no content yet)
 * and at END-OF-MESSAGE from smtpd_end_of_data_restrictions; both get our
 * smtpd_data_restrictions, never the sender and recipient lists again, which decided at
 * RCPT and would count the message twice. Postfix never sends the content: the content
 * checks there decide nothing, the rest (client, sender) decides the same at either.
 */
const STAGES: Record<string, PolicyStage> = {
  CONNECT: 'connect',
  EHLO: 'mail',
  HELO: 'mail',
  MAIL: 'mail',
  RCPT: 'rcpt',
  DATA: 'data',
  'END-OF-MESSAGE': 'data',
  VRFY: 'rcpt',
  ETRN: 'connect',
};

const MAX_REQUEST_BYTES = 64 * 1024;
/**
 * Requests of one connection read ahead of their answers. Postfix sends one and waits for
 * its answer; a client that sends on without reading is not let fill memory with them.
 */
const MAX_PENDING = 8;
/** Answers a client may leave unread before its requests are no longer read. */
const MAX_UNREAD_BYTES = 64 * 1024;
/** A connection quiet this long is closed (Postfix closes its own after 300 s idle). */
const IDLE_MS = 10 * 60_000;

/** The end of a request: an empty line. */
const REQUEST_END = /\r?\n\r?\n/;

/**
 * A connection's requests: the text read is pushed as it comes, and each complete
 * request (its lines, up to the empty line) is taken out in turn.
 *
 * Only the text not searched yet is searched for a request's end, with the few characters
 * before it that an end may begin in, and a request's pieces are joined once, when its end
 * has come: a client sending a byte per packet gets a read per byte, and searching or
 * copying all that waits at each one made a 64 KiB request cost about a second.
 */
export class RequestReader {
  /** What was read of the request whose end has not come, in the pieces it came in. */
  private parts: string[] = [];
  private length = 0;
  /** The last characters searched: an end that finishes in the next piece may begin there. */
  private tail = '';
  /** Complete requests not taken yet. */
  private readonly complete: string[] = [];

  push(chunk: string): void {
    let text = chunk;
    for (;;) {
      const window = this.tail + text;
      const end = REQUEST_END.exec(window);
      if (!end) {
        this.parts.push(text);
        this.length += text.length;
        this.tail = window.slice(-3);
        return;
      }
      this.parts.push(text);
      const all = this.parts.join('');
      const at = this.length - this.tail.length + end.index;
      this.complete.push(all.slice(0, at));
      // what follows is the next request, none of it searched yet
      text = all.slice(at + end[0].length);
      this.parts = [];
      this.length = 0;
      this.tail = '';
    }
  }

  /** The next complete request's lines, or undefined while none is complete. */
  take(): string | undefined {
    return this.complete.shift();
  }

  /** How much is read of the request whose end has not come. */
  get partial(): number {
    return this.length;
  }
}

export function toPolicyRequest(attrs: Map<string, string>): Omit<PolicyRequestInput, 'v'> | string {
  if (attrs.get('request') !== 'smtpd_access_policy') return 'request=smtpd_access_policy is required';
  const state = (attrs.get('protocol_state') ?? 'RCPT').toUpperCase();
  const stage = STAGES[state];
  if (!stage) return `unknown protocol_state ${state}`;
  const ip = attrs.get('client_address');
  if (!ip) return 'client_address is required';
  const name = attrs.get('client_name');
  const sender = attrs.get('sender');
  const recipient = attrs.get('recipient');
  const stageForRcpt = stage === 'rcpt' && !recipient ? 'mail' : stage;
  return {
    stage: stageForRcpt,
    origin: 'postfix',
    sessionId: `pf-${attrs.get('instance') ?? Math.random().toString(36).slice(2)}`,
    queueId: attrs.get('queue_id') || null,
    client: { ip, hostname: name && name !== 'unknown' ? name : null, helo: attrs.get('helo_name') ?? '' },
    user: attrs.get('sasl_username') || null,
    sender: sender ?? null,
    recipient: recipient || null,
    // after the RCPTs Postfix names the recipient only when there is one; a HOLD then
    // spares it when its own allow list holds the sender, as for mail on port 25
    recipients: stage === 'data' && recipient ? [recipient] : [],
    size: attrs.get('size') ? Number(attrs.get('size')) || null : null,
    tls: !!attrs.get('encryption_protocol'),
  };
}

/** Postfix access(5) action for a decision. */
export function toPostfixAction(d: PolicyDecision): string {
  const text = (t: string) => t.replace(/[\r\n]/g, ' ');
  switch (d.action) {
    case 'continue':
      return 'DUNNO';
    case 'accept':
      return 'OK';
    case 'reject':
    case 'tempfail':
      return d.reply
        ? `${d.reply.code} ${d.reply.enhanced} ${text(d.reply.text)}`
        : d.action === 'reject'
          ? 'REJECT'
          : 'DEFER';
    case 'quarantine':
      return 'HOLD';
    case 'discard':
      return 'DISCARD';
  }
}

export function startDelegationServer(opts: {
  port: number;
  host: string;
  logger: Logger;
  decide: (req: Omit<PolicyRequestInput, 'v'>) => Promise<PolicyDecision>;
}): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    sock.setEncoding('utf8');
    sock.setTimeout(IDLE_MS, () => sock.destroy());
    let reader = new RequestReader();
    let busy = Promise.resolve();
    let pending = 0;
    const answer = async (attrs: Map<string, string>) => {
      const req = toPolicyRequest(attrs);
      if (typeof req === 'string') {
        sock.write(`action=DEFER_IF_PERMIT ${req}\n\n`);
        return;
      }
      try {
        sock.write(`action=${toPostfixAction(await opts.decide(req))}\n\n`);
      } catch (err) {
        opts.logger.warn({ err }, 'policy delegation request failed');
        sock.write('action=DEFER_IF_PERMIT policy service error\n\n');
      }
    };
    // takes the complete requests read, as long as there is room for them, and reads on
    // only while there is
    const pump = () => {
      let block: string | undefined;
      while (
        pending < MAX_PENDING &&
        sock.writableLength < MAX_UNREAD_BYTES &&
        (block = reader.take()) !== undefined
      ) {
        const attrs = new Map<string, string>();
        for (const line of block.split(/\r?\n/)) {
          const i = line.indexOf('=');
          if (i > 0) attrs.set(line.slice(0, i).trim(), line.slice(i + 1));
        }
        pending++;
        busy = busy
          .then(() => answer(attrs))
          .catch(() => undefined)
          .finally(() => {
            pending--;
            pump();
          });
      }
      // one request without its end past the limit (many small ones are not)
      if (reader.partial > MAX_REQUEST_BYTES) {
        sock.end('action=DEFER_IF_PERMIT request too large\n\n');
        reader = new RequestReader();
        return;
      }
      if (pending >= MAX_PENDING || sock.writableLength >= MAX_UNREAD_BYTES) sock.pause();
      else sock.resume();
    };
    sock.on('data', (chunk: string) => {
      reader.push(chunk);
      pump();
    });
    sock.on('drain', pump);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.removeListener('error', reject);
      resolve({
        server,
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      });
    });
  });
}
