import { connect } from 'node:net';
import { connectTimedOut, connectWithin, withScanSlot } from './scanner-limits.js';

export type ScanResult = { infected: false } | { infected: true; signature: string };

/**
 * clamd's INSTREAM command over TCP (clamd(8)): `zINSTREAM\0`, then chunks each
 * prefixed with a 4-byte big-endian length, then a zero length; the answer is
 * `stream: OK` or `stream: <signature> FOUND`, NUL-terminated.
 */
export async function clamdScan(url: string, data: Buffer, timeoutMs: number): Promise<ScanResult> {
  const u = new URL(url);
  const port = Number(u.port || 3310);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  return withScanSlot(
    url,
    timeoutMs,
    () => unanswered(timeoutMs),
    (left) => scan(host, port, data, left),
  );
}

function unanswered(timeoutMs: number): Error {
  return new Error(`clamd did not answer within ${timeoutMs} ms`);
}

function scan(host: string, port: number, data: Buffer, timeoutMs: number): Promise<ScanResult> {
  return new Promise<ScanResult>((resolve, reject) => {
    const sock = connect({ host, port });
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (err: Error | null, res?: ScanResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(res!);
    };
    // not even connected by then: as the connection timeout (a connect timer as long
    // as this one, made after it, would never fire first)
    const timer = setTimeout(
      () => finish(sock.connecting ? connectTimedOut('clamd', timeoutMs) : unanswered(timeoutMs)),
      timeoutMs,
    );
    connectWithin(sock, timeoutMs, 'clamd', finish);
    sock.on('error', (err) => finish(new Error(`clamd: ${err.message}`, { cause: err })));
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('end', () => {
      const answer = Buffer.concat(chunks).toString('utf8').replace(/\0/g, '').trim();
      const m = /^stream: (.+) FOUND$/.exec(answer);
      if (m) return finish(null, { infected: true, signature: m[1]! });
      if (answer === 'stream: OK') return finish(null, { infected: false });
      finish(new Error(`clamd: unexpected answer "${answer.slice(0, 200)}"`));
    });
    // written before the connection is up, so the socket holds every piece and sends
    // them in one system call once it connects (one per chunk header otherwise)
    sock.write('zINSTREAM\0');
    const CHUNK = 64 * 1024;
    for (let i = 0; i < data.length; i += CHUNK) {
      const part = data.subarray(i, i + CHUNK);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(part.length);
      sock.write(len);
      sock.write(part);
    }
    sock.write(Buffer.alloc(4));
  });
}
