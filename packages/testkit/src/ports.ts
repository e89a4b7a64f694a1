import { createServer } from 'node:net';
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
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, host, () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error(`no free port found between ${LOW} and ${HIGH}`);
}
