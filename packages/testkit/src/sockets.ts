import { Socket } from 'node:net';

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

/**
 * The server's end of `client`'s connection, for a test that runs the server in its own
 * process: only this socket says how much of the server's output waits for the client
 * (the kernel's buffers hide the rest) and when the server ends the connection. For a test
 * to wait on, never to assert what a client would see. Throws when there is none.
 */
export function serverSide(client: Socket): Socket {
  // Node lists a process's open sockets only through this undocumented call
  const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
  const s = handles.find(
    (h): h is Socket =>
      h instanceof Socket && h.localPort === client.remotePort && h.remotePort === client.localPort,
  );
  if (!s) throw new Error(`no socket of this process serves the client on port ${client.localPort}`);
  return s;
}
