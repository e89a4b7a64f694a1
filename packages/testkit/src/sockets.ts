import type { Socket } from 'node:net';

/** What the server wrote on `s` until it closed it, and how long after this call it closed. */
export const untilClosed = (s: Socket) =>
  new Promise<{ text: string; ms: number }>((resolve) => {
    const start = Date.now();
    let text = '';
    s.on('data', (d: Buffer) => (text += d.toString('latin1')));
    s.on('error', () => undefined);
    s.once('close', () => resolve({ text, ms: Date.now() - start }));
  });

/** Writes `bytes` one a time every `everyMs` while the socket is open. */
export const trickle = (s: Socket, bytes: string, everyMs: number) => {
  let i = 0;
  const timer = setInterval(() => {
    if (s.destroyed || i >= bytes.length) clearInterval(timer);
    else s.write(bytes[i++]!);
  }, everyMs);
  s.once('close', () => clearInterval(timer));
};
