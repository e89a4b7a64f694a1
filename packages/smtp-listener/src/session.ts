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

/** Reads the DATA stream; stops buffering (returns null) once the size limit is passed. */
export function readMessage(stream: Readable, limit: number): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    stream.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) over = true;
      if (!over) chunks.push(c);
    });
    stream.on('end', () => resolve(over ? null : Buffer.concat(chunks, size)));
    stream.on('error', reject);
  });
}

export interface DataStage {
  limit: number;
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
    const raw = await readMessage(stream, stage.limit);
    if (stream.sizeExceeded || raw === null) throw stage.refuse(reply.messageTooBig(stage.limit));
    const started = process.hrtime.bigint();
    const queueId = await stage.accept(raw);
    stage.observe(Number(process.hrtime.bigint() - started) / 1e9);
    return queueId;
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
