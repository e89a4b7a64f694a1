import { createConnection, createServer, type Server, type Socket } from 'node:net';

export interface TcpProxy {
  port: number;
  /** Cut every connection and refuse new ones (the upstream is "down"). */
  cut(): void;
  /** Accept and forward again. */
  restore(): void;
  /** Bytes written to upstream before the client's data, e.g. a PROXY protocol header. */
  preamble?: (client: Socket) => Buffer | null;
  close(): Promise<void>;
}

/** A TCP proxy on 127.0.0.1 in front of host:port that a test can cut and restore. */
export async function startTcpProxy(
  target: { host: string; port: number },
  opts: { preamble?: (client: Socket) => Buffer | null; bindHost?: string } = {},
): Promise<TcpProxy> {
  let down = false;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = createConnection(target);
    sockets.add(client);
    sockets.add(upstream);
    const pre = opts.preamble?.(client);
    if (pre) upstream.write(pre);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, opts.bindHost ?? '127.0.0.1', () => r()));
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : 0,
    cut() {
      down = true;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() {
      down = false;
    },
    async close() {
      down = true;
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
