/**
 * Outbound benchmark: messages/s that outbound-relay delivers to Postfix's smtp-sink,
 * with 1 and with 2 instances, each instance its own process as in production.
 *
 *   pnpm bench:outbound [--messages 2000] [--size 10240] [--domains 10] [--instances 1,2] [--no-reuse]
 *
 * Each round: a fresh RabbitMQ vhost and Redis prefix; `--messages` messages of `--size`
 * bytes, one recipient each, spread over `--domains` recipient domains whose MX (from a
 * DNS server on loopback) is 127.0.0.2, where smtp-sink listens on a free port
 * (OUTBOUND_PORT): not 127.0.0.1, which the relay's loop detection finds among this
 * host's interface addresses and takes for ourselves. The queue is filled first (confirmed publishes), then the instances
 * start together. Rate = messages delivered after the first delivery was seen / time
 * from then until the last, read from the instances' own counters
 * (mailyard_outbound_relay_attempts_total{result="delivered"}), polled every 50 ms.
 * smtp-sink offers PIPELINING and 8BITMIME but no STARTTLS, so the sessions are in clear;
 * sessions are kept open between messages to the same server (as Postfix's connection
 * cache; `--no-reuse`: one session per message) and the number opened is printed.
 *
 * Needs smtp-sink (Debian: apt-get install postfix), RabbitMQ and Redis as for the tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Bus } from '@mailyard/bus';
import { ENVELOPE_VERSION, RoutingKeys, type Envelope } from '@mailyard/contracts';
import { createLogger } from '@mailyard/observability';
import { newQueueId } from '@mailyard/smtp-core';
import { createTestRedis, createVhost, startDnsServer, type Zone } from '@mailyard/testkit';

const ROOT = resolve(import.meta.dirname, '..');

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '2000' },
    size: { type: 'string', default: '10240' },
    domains: { type: 'string', default: '10' },
    instances: { type: 'string', default: '1,2' },
    'no-reuse': { type: 'boolean', default: false },
  },
});
const MESSAGES = Number(values.messages);
const SIZE = Number(values.size);
const DOMAINS = Number(values.domains);
const ROUNDS = values.instances.split(',').map(Number);

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function message(i: number, domain: string): Buffer {
  const head = `From: <sender@bench.test>\r\nTo: <user${i}@${domain}>\r\nSubject: bench ${i}\r\nMessage-ID: <bench${i}@bench.test>\r\n\r\n`;
  const line = 'The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuvwxyz\r\n';
  return Buffer.from(head + line.repeat(Math.max(1, Math.ceil((SIZE - head.length) / line.length))));
}

/** Resolves once smtp-sink accepts connections; rejects if it exits first. */
async function sinkListening(sink: ChildProcess, port: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (sink.exitCode !== null) throw new Error(`smtp-sink exited with ${sink.exitCode}`);
    const ok = await new Promise<boolean>((r) => {
      const c = connect({ host: '127.0.0.2', port }, () => {
        c.destroy();
        r(true);
      });
      c.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('smtp-sink did not start listening');
}

/** Sum over the instances of a counter's series that match `labels` (a regex on the label text). */
async function counter(ports: number[], name: string, labels: string): Promise<number> {
  let sum = 0;
  for (const port of ports) {
    try {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      for (const m of text.matchAll(new RegExp(`^${name}\\{[^}]*${labels}[^}]*\\} (\\d+)`, 'gm')))
        sum += Number(m[1]);
    } catch {
      // not listening yet
    }
  }
  return sum;
}

const delivered = (ports: number[]) =>
  counter(ports, 'mailyard_outbound_relay_attempts_total', 'result="delivered"');

async function round(instances: number): Promise<{ rate: number; sessions: number }> {
  const vhost = await createVhost('bench');
  const redis = createTestRedis();
  const sinkPort = await freePort();
  const zone: Zone = {};
  const domains = Array.from({ length: DOMAINS }, (_, i) => `sink${i}.test`);
  for (const d of domains) zone[d] = { MX: [{ priority: 10, exchange: 'mx.sink.test' }] };
  zone['mx.sink.test'] = { A: ['127.0.0.2'] };
  const dns = await startDnsServer(zone);
  // smtp-sink: -c counts, backlog 1024; it accepts everything
  // (as root it must be told which user to become)
  const asRoot = process.getuid?.() === 0 ? ['-u', 'nobody'] : [];
  const sink = spawn('smtp-sink', [...asRoot, '-c', `127.0.0.2:${sinkPort}`, '1024'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const children: ChildProcess[] = [];
  try {
    await sinkListening(sink, sinkPort);
    // fill the queue
    const bus = new Bus({ url: vhost.url, logger: createLogger('bench', 'warn'), name: 'bench' });
    bus.start();
    await bus.waitConnected();
    const batch = 500;
    for (let i = 0; i < MESSAGES; i += batch) {
      await Promise.all(
        Array.from({ length: Math.min(batch, MESSAGES - i) }, (_, k) => {
          const n = i + k;
          const domain = domains[n % DOMAINS]!;
          const env: Envelope = {
            v: ENVELOPE_VERSION,
            queueId: newQueueId(),
            mailFrom: 'sender@bench.test',
            recipients: [`user${n}@${domain}`],
            client: { ip: '127.0.0.1', hostname: 'localhost', helo: 'localhost', tls: null, user: null },
            receivedAt: new Date().toISOString(),
            attempts: 0,
            body: '7BIT',
            smtputf8: false,
            lastError: null,
          };
          return bus.publishMail(RoutingKeys.outbound, message(n, domain), env);
        }),
      );
    }
    await bus.stop();

    const ports: number[] = [];
    for (let i = 0; i < instances; i++) {
      const httpPort = await freePort();
      ports.push(httpPort);
      children.push(
        spawn(process.execPath, ['--import', 'tsx', 'services/outbound-relay/src/main.ts'], {
          cwd: ROOT,
          env: {
            ...process.env,
            AMQP_URL: vhost.url,
            REDIS_PREFIX: redis.prefix,
            DNS_SERVERS: dns.address,
            MYHOSTNAME: 'relay.bench.test',
            OUTBOUND_PORT: String(sinkPort),
            HTTP_PORT: String(httpPort),
            LISTEN_ADDRESS: '127.0.0.1',
            LOG_LEVEL: 'warn',
            DELAY_WARNING_TIME: '0',
            SMTP_CONNECTION_CACHE_ON_DEMAND: values['no-reuse'] ? 'no' : 'yes',
          },
          stdio: ['ignore', 'ignore', 'inherit'],
        }),
      );
    }
    let first: { t: number; n: number } | null = null;
    const deadline = Date.now() + 600_000;
    for (;;) {
      const n = await delivered(ports);
      const t = performance.now();
      if (!first && n > 0) first = { t, n };
      if (n >= MESSAGES && first) {
        const rate = (n - first.n) / ((t - first.t) / 1000);
        return {
          rate,
          sessions: await counter(ports, 'mailyard_outbound_relay_sessions_total', 'reused="no"'),
        };
      }
      if (Date.now() > deadline) throw new Error(`only ${n} of ${MESSAGES} delivered in 10 minutes`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(
      children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))),
    );
    sink.kill('SIGTERM');
    await dns.close();
    await redis.cleanup();
    await vhost.delete();
  }
}

console.log(
  `outbound-relay -> smtp-sink: ${MESSAGES} messages of ${SIZE} bytes, ${DOMAINS} destination domains, ` +
    (values['no-reuse'] ? 'one session per message' : 'sessions reused'),
);
for (const n of ROUNDS) {
  const { rate, sessions } = await round(n);
  console.log(`${n} instance${n === 1 ? ' ' : 's'}: ${rate.toFixed(0)} msgs/s, ${sessions} sessions opened`);
}
