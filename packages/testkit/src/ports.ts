import { spawn } from 'node:child_process';
import { createConnection, createServer, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';

/**
 * The first port of the kernel's ephemeral range (net.ipv4.ip_local_port_range): ports
 * below it are never handed out to a `listen(0)` or to the local end of an outgoing
 * connection.
 */
function ephemeralStart(): number {
  try {
    const first = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0]);
    if (Number.isInteger(first) && first > 12_000) return first;
  } catch {
    // not Linux: the IANA range's start
  }
  return 49_152;
}

const LOW = 10_000;
const HIGH = ephemeralStart();
/** Every port freePort gave this process: a test file draws a few hundred of 22,000. */
const handedOut = new Set<number>();

/**
 * A TCP port free on 127.0.0.1 for a server a test starts later (a service process told
 * its port in its environment). A port the kernel gave out for `listen(0)` and took back
 * is soon given again, to another test's `listen(0)` or as the local port of any outgoing
 * connection (to RabbitMQ, Redis, ...), and the server then fails with EADDRINUSE. So the
 * port is drawn at random from below the ephemeral range, where neither happens, and
 * checked by binding it.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    // the check binds and frees it: a port given before, not yet taken by its server,
    // would pass it again, and a service told the same port twice fails with EADDRINUSE
    if (handedOut.has(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, host, () => s.close(() => resolve(true)));
    });
    if (free) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port found between ${LOW} and ${HIGH}`);
}

/**
 * A port on 127.0.0.1 where connection attempts are dropped, as a firewall dropping
 * packets would: a listener that never accepts, its one-place accept queue filled, so
 * Linux drops further SYNs and a client's connect hangs. `close` frees it.
 */
export async function droppingPort(): Promise<{ port: number; close(): void }> {
  // node's listeners always accept: python's socket does not unless asked
  const listener = spawn('python3', [
    '-c',
    'import socket,time\n' +
      's=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(0)\n' +
      'print(s.getsockname()[1], flush=True)\n' +
      'time.sleep(600)\n',
  ]);
  const fillers: Socket[] = [];
  const close = () => {
    for (const s of fillers) s.destroy();
    listener.kill();
  };
  try {
    const port = await new Promise<number>((resolve, reject) => {
      listener.once('error', reject);
      listener.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    });
    // the queue holds one connection: the first of these to connect fills it
    await Promise.race(
      [0, 1, 2].map(
        () =>
          new Promise<void>((resolve) => {
            const s = createConnection({ host: '127.0.0.1', port }, resolve);
            s.on('error', () => undefined);
            fillers.push(s);
          }),
      ),
    );
    return { port, close };
  } catch (err) {
    close();
    throw err;
  }
}

/** Whether `where` (a port on 127.0.0.1, or a Unix socket's path) takes a connection now. */
export function listening(where: number | string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = typeof where === 'number' ? createConnection(where, '127.0.0.1') : createConnection(where);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
