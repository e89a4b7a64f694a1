import type { Readable } from 'node:stream';
import type { SMTPServerSession } from 'smtp-server';
import type { ClientInfo, Envelope } from '@mailyard/contracts';

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
