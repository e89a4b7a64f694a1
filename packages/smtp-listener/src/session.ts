import type { Readable } from 'node:stream';
import type { SMTPServerAddress, SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import type { ClientInfo, Envelope } from '@mailyard/contracts';
import { SmtpReject, reply } from '@mailyard/smtp-core';

/** What smtp-server records about a session that both of our SMTP listeners put in envelopes. */

/** TLS protocol and cipher of the session, or null when it is not encrypted. */
export function sessionTls(session: SMTPServerSession): ClientInfo['tls'] {
  if (!session.secure) return null;
  const c = (session as unknown as { tlsOptions?: { version?: string; name?: string } }).tlsOptions;
  return c ? { protocol: c.version ?? 'TLS', cipher: c.name ?? 'unknown' } : null;
}

/** The client's reverse DNS name; null when it had none (smtp-server then gives "[ip]"). */
export function sessionHostname(session: SMTPServerSession): string | null {
  return session.clientHostname && !session.clientHostname.startsWith('[') ? session.clientHostname : null;
}

/**
 * A RCPT TO path as the client wrote it: smtp-server drops a source route
 * (`<@a.example,@b.example:user@c.example>`) from the address, and the route is a relay
 * trick we refuse (RFC 5321 §3.6.1 allows it; DESIGN promise 4), whoever the client is.
 */
export function forwardPath(address: SMTPServerAddress): string {
  return address.sourceRoute ? `${address.sourceRoute}:${address.address}` : address.address;
}

/** MAIL FROM carried SMTPUTF8 (RFC 6531). */
export function sessionSmtpUtf8(session: SMTPServerSession): boolean {
  return !!(session.envelope as { smtpUtf8?: boolean }).smtpUtf8;
}

/** MAIL FROM's BODY parameter (RFC 6152, RFC 3030). */
export function sessionBodyType(session: SMTPServerSession): Envelope['body'] {
  const b =
    session.envelope.mailFrom && session.envelope.mailFrom.args
      ? session.envelope.mailFrom.args.BODY
      : undefined;
  return b === '8BITMIME' ? '8BITMIME' : b === 'BINARYMIME' ? 'BINARYMIME' : '7BIT';
}

/**
 * The bytes of messages one intake process holds in memory at once, over all its
 * sessions: a message is read whole before it is queued, so without a bound,
 * smtpd_max_clients sessions sending message_size_limit each could take more memory
 * than the process has. Past the bound a message is answered as Postfix answers when
 * its queue file system is full (452 4.3.1), and the client tries again later.
 */
export class DataMemory {
  private held = 0;

  /** `limit`: in bytes; 0: no limit. `onChange`: the bytes held after each change (a gauge). */
  constructor(
    readonly limit: number,
    private readonly onChange?: (held: number) => void,
  ) {}

  /** Takes `n` bytes; false, with nothing taken, when that would pass the limit. */
  take(n: number): boolean {
    if (this.limit && this.held + n > this.limit) return false;
    this.held += n;
    this.onChange?.(this.held);
    return true;
  }

  give(n: number): void {
    this.held = Math.max(0, this.held - n);
    this.onChange?.(this.held);
  }
}

/** A message read in full, or why it was not kept: over the size limit, or over the memory bound. */
export type ReadMessage = { raw: Buffer } | { over: 'size' | 'memory' };

/**
 * Reads the DATA stream, to its end whatever happens; stops keeping it once the size
 * limit or `memory` is passed (too big wins: that message can never be taken). A message
 * kept holds its bytes of `memory` from then on, for the caller to give back; one not
 * kept, or a stream that fails or closes before its end, gives them back here.
 */
export function readMessage(stream: Readable, limit: number, memory?: DataMemory): Promise<ReadMessage> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let held = 0;
    let over: 'size' | 'memory' | null = null;
    const drop = () => {
      chunks.length = 0;
      memory?.give(held);
      held = 0;
    };
    stream.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        if (over !== 'size') drop();
        over = 'size';
      } else if (over) return;
      else if (memory && !memory.take(c.length)) {
        over = 'memory';
        drop();
      } else {
        held += c.length;
        chunks.push(c);
      }
    });
    stream.on('end', () => {
      if (over) return resolve({ over });
      // the bytes held are the caller's to give back now
      held = 0;
      resolve({ raw: Buffer.concat(chunks, size) });
    });
    // a client gone mid-message: smtp-server destroys the stream, with an error or not
    stream.on('close', () => {
      if (stream.readableEnded) return;
      drop();
      reject(new Error('the message stream closed before its end'));
    });
    stream.on('error', (err) => {
      drop();
      reject(err);
    });
  });
}

export interface DataStage {
  limit: number;
  /** The process's bound on message bytes held at once (smtpd_data_memory_limit). */
  memory?: DataMemory;
  /** Queues the message; resolves to its queue id once the broker confirmed it. */
  accept(raw: Buffer): Promise<string>;
  /** Counts and logs a refusal made here (over the limit, local error); returns what to send. */
  refuse(err: SmtpReject): Error;
  /** Logs a failure of `accept` that is not an SmtpReject (answered with 451). */
  failed(err: unknown): void;
  /** Seconds from end of DATA to the confirm. */
  observe(seconds: number): void;
}

/**
 * The end of DATA for both SMTP listeners: read the message within the size limit, queue
 * it, and answer `250 2.0.0 Ok: queued as <id>` only after the confirm. A refusal thrown
 * by `accept` (an SmtpReject) is sent as it is.
 */
export function answerData(
  stream: SMTPServerDataStream,
  stage: DataStage,
  cb: (err?: Error | null, message?: string) => void,
): void {
  const run = async (): Promise<string> => {
    const read = await readMessage(stream, stage.limit, stage.memory);
    if (stream.sizeExceeded || ('over' in read && read.over === 'size')) {
      if ('raw' in read) stage.memory?.give(read.raw.length);
      throw stage.refuse(reply.messageTooBig(stage.limit));
    }
    if ('over' in read) throw stage.refuse(reply.insufficientStorage());
    const started = process.hrtime.bigint();
    try {
      const queueId = await stage.accept(read.raw);
      stage.observe(Number(process.hrtime.bigint() - started) / 1e9);
      return queueId;
    } finally {
      // queued (the broker has its copy) or refused: no longer held here
      stage.memory?.give(read.raw.length);
    }
  };
  run().then(
    (queueId) => cb(null, `2.0.0 Ok: queued as ${queueId}`),
    (err: unknown) => {
      if (err instanceof SmtpReject) return cb(err);
      stage.failed(err);
      cb(stage.refuse(reply.localError()));
    },
  );
}
