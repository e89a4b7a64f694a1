import { createConnection, createServer, type Server, type Socket } from 'node:net';

export interface TcpProxy {
  port: number;
  /** Cut every connection and refuse new ones (the upstream is "down"). */
  cut(): void;
  /** Accept and forward again. */
  restore(): void;
  /** Keeps what the upstream sends (replies, publisher confirms) from the clients until release(). */
  hold(): void;
  release(): void;
  /** Bytes written to upstream before the client's data, e.g. a PROXY protocol header. */
  preamble?: (client: Socket) => Buffer | null;
  /**
   * Writes `data` to every client as if the upstream had sent it. With `amqpFrames` the
   * upstream's bytes are passed on in whole AMQP frames, so this lands between two.
   */
  toClients(data: Buffer): void;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** With `amqpFrames`: connections whose Connection.Open-Ok has passed. */
  readonly opened: number;
  close(): Promise<void>;
}

/** AMQP 0-9-1 method frames on channel 0 that RabbitMQ sends under a resource alarm. */
export const amqpFrames = {
  method(classId: number, methodId: number, args: Buffer = Buffer.alloc(0)): Buffer {
    const payload = Buffer.concat([
      Buffer.from([classId >> 8, classId & 255, methodId >> 8, methodId & 255]),
      args,
    ]);
    const head = Buffer.alloc(7);
    head.writeUInt8(1, 0); // method frame
    head.writeUInt16BE(0, 1);
    head.writeUInt32BE(payload.length, 3);
    return Buffer.concat([head, payload, Buffer.from([0xce])]);
  },
  /** Connection.Blocked (10, 60) with a reason. */
  blocked(reason: string): Buffer {
    const r = Buffer.from(reason, 'utf8');
    return amqpFrames.method(10, 60, Buffer.concat([Buffer.from([r.length]), r]));
  },
  /** Connection.Unblocked (10, 61). */
  unblocked(): Buffer {
    return amqpFrames.method(10, 61);
  },
};

/** A TCP proxy on 127.0.0.1 in front of host:port that a test can cut and restore. */
export async function startTcpProxy(
  target: { host: string; port: number },
  opts: {
    preamble?: (client: Socket) => Buffer | null;
    bindHost?: string;
    amqpFrames?: boolean;
    /**
     * With `amqpFrames`: asked as each connection's Connection.Open-Ok passes; when true, the
     * upstream's later frames are held (as hold(), until release()): a broker that accepted
     * the connection and then answers nothing, heartbeats included.
     */
    holdAfterOpen?: () => boolean;
    /**
     * What a client sends from the first `marker` on (found across chunks too) is kept
     * from the upstream for good, not passed on even as the client goes: a publish the
     * broker never gets, from a client that waits for its confirm until it is killed.
     * `onWithheld` is called as it is found.
     */
    withholdFrom?: { marker: string; onWithheld?: () => void };
  } = {},
): Promise<TcpProxy> {
  let down = false;
  let held = false;
  let accepted = 0;
  let openedCount = 0;
  const upstreams = new Set<Socket>();
  const sockets = new Set<Socket>();
  const clients = new Set<Socket>();
  const server: Server = createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    accepted++;
    const upstream = createConnection(target);
    upstreams.add(upstream);
    sockets.add(client);
    sockets.add(upstream);
    const pre = opts.preamble?.(client);
    if (pre) upstream.write(pre);
    if (opts.withholdFrom) withholdFrom(client, upstream, opts.withholdFrom);
    else client.pipe(upstream);
    clients.add(client);
    if (opts.amqpFrames) {
      // whole frames only (7-byte header, payload, frame end), so that toClients() never
      // splits one
      let pending: Buffer = Buffer.alloc(0);
      let opened = false;
      upstream.on('data', (d: Buffer) => {
        pending = pending.length ? Buffer.concat([pending, d]) : d;
        let off = 0;
        let holdNow = false;
        while (pending.length - off >= 7 && !holdNow) {
          const total = 7 + pending.readUInt32BE(off + 3) + 1;
          if (pending.length - off < total) break;
          // Connection.Open-Ok: a method frame (type 1) on channel 0 of class 10, method 41
          if (!opened && pending[off] === 1 && pending.readUInt32BE(off + 7) === (10 << 16) + 41) {
            opened = true;
            openedCount++;
            holdNow = !!opts.holdAfterOpen?.();
          }
          off += total;
        }
        if (off) {
          client.write(pending.subarray(0, off));
          pending = pending.subarray(off);
        }
        if (holdNow) {
          held = true;
          upstream.pause();
        }
      });
    } else upstream.pipe(client);
    if (held) upstream.pause();
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
      upstreams.delete(upstream);
      clients.delete(client);
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
    hold() {
      held = true;
      for (const u of upstreams) u.pause();
    },
    release() {
      held = false;
      for (const u of upstreams) u.resume();
    },
    toClients(data) {
      for (const c of clients) c.write(data);
    },
    get accepted() {
      return accepted;
    },
    get opened() {
      return openedCount;
    },
    async close() {
      down = true;
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** Passes what `client` sends on to `upstream` until `marker`; nothing from there on. */
function withholdFrom(
  client: Socket,
  upstream: Socket,
  { marker, onWithheld }: { marker: string; onWithheld?: () => void },
): void {
  const wanted = Buffer.from(marker);
  let tail: Buffer = Buffer.alloc(0);
  let withheld = false;
  client.on('data', (d: Buffer) => {
    if (withheld) return;
    const seen = Buffer.concat([tail, d]);
    if (seen.includes(wanted)) {
      withheld = true;
      onWithheld?.();
      return;
    }
    tail = seen.subarray(Math.max(0, seen.length - wanted.length + 1));
    upstream.write(d);
  });
  client.on('end', () => {
    if (!withheld) upstream.end();
  });
}
