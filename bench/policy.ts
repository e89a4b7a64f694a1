// pnpm bench:policy — what the policy service costs:
//  1. added latency per SMTP transaction (p50/p99), default restriction set, vs policy off;
//  2. decisions per second of one policy instance (RPC, 64 in flight);
//  3. Redis round trips per message (from the service's own counter).
// A script, not a test: numbers go to stdout.
import { PolicyClient } from '@mailyard/policy-client';
import { RawSmtp } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../test/harness.js';

const N = Number(process.env.BENCH_MESSAGES ?? 300);
const clock = { now: Date.now() };

async function transaction(p: Platform): Promise<number> {
  // the default set limits connections and messages per client IP; the policy
  // service's clock moves on so the benchmark stays under them
  clock.now += 20_000;
  const t0 = process.hrtime.bigint();
  const c = await RawSmtp.connect(p.inbound.port, '127.0.0.1', { localAddress: '127.0.0.5' });
  await c.read();
  await c.cmd('EHLO client.example.net');
  const m = await c.cmd('MAIL FROM:<bench@sender.test>');
  const r = await c.cmd('RCPT TO:<alice@example.test>');
  if (m.code !== 250 || r.code !== 250) {
    c.close();
    throw new Error(`refused: ${m.text} / ${r.text}`);
  }
  await c.cmd('DATA');
  c.write('From: bench@sender.test\r\nTo: alice@example.test\r\nSubject: bench\r\n\r\nhello\r\n.\r\n');
  const d = await c.read(30_000);
  c.close();
  if (d.code !== 250) throw new Error(d.text);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

async function run(withPolicy: boolean): Promise<{ p50: number; p99: number; platform: Platform }> {
  const p = await startPlatform({
    inbound: { mynetworks: '127.0.0.1/32' },
    ...(withPolicy ? { policy: { mynetworks: '127.0.0.1/32' }, policyNow: () => clock.now } : {}),
    withDelivery: false,
    zone: {
      '5.0.0.127.in-addr.arpa': { PTR: ['client.example.net'] },
      'client.example.net': { A: ['127.0.0.5'] },
      'sender.test': {
        MX: [{ priority: 10, exchange: 'mx.sender.test' }],
        TXT: ['v=spf1 ip4:127.0.0.5 -all'],
      },
    },
  });
  await addAccount(p.directory, 'alice@example.test');
  if (withPolicy) {
    // get past greylisting once: the benchmark measures a known sender
    await transaction(p).catch(() => undefined);
    clock.now += 301_000;
  }
  for (let i = 0; i < 20; i++) await transaction(p); // warm-up
  const times: number[] = [];
  for (let i = 0; i < N; i++) times.push(await transaction(p));
  return { p50: pct(times, 50), p99: pct(times, 99), platform: p };
}

const off = await run(false);
await off.platform.close();
const on = await run(true);
const counter = async (name: string) => {
  const metrics = await on.platform.policyRt!.registry.getMetricsAsJSON();
  const m = metrics.find((x) => x.name === name);
  return (m?.values ?? []) as { value: number; labels: Record<string, string> }[];
};
const trips = (await counter('mailyard_policy_redis_round_trips_total')).reduce((a, v) => a + v.value, 0);
const msgs = (await counter('mailyard_policy_decisions_total'))
  .filter((v) => v.labels.stage === 'data')
  .reduce((a, v) => a + v.value, 0);

// decisions per second: rcpt-stage RPCs straight to the service
const client = new PolicyClient({
  // the listener's own bus, as mta-inbound's client uses it
  bus: on.platform.inboundRt.bus,
  logger: on.platform.inboundRt.logger,
  timeoutMs: 10_000,
  defaultAction: {
    action: 'tempfail',
    reply: { code: 451, enhanced: '4.3.5', text: 'Server configuration problem' },
  },
});
client.start();
const total = 5000;
let sent = 0;
const t0 = Date.now();
await Promise.all(
  Array.from({ length: 64 }, async () => {
    while (sent < total) {
      sent++;
      await client.ask({
        stage: 'rcpt',
        origin: 'msa',
        sessionId: `bench${sent}`,
        client: { ip: '127.0.0.5', helo: 'client.example.net' },
        sender: 'bench@sender.test',
        recipient: 'alice@example.test',
      });
    }
  }),
);
const rate = total / ((Date.now() - t0) / 1000);
await client.stop();
await on.platform.close();

console.log(`messages per run: ${N}`);
console.log(`SMTP transaction without policy: p50 ${off.p50.toFixed(2)} ms, p99 ${off.p99.toFixed(2)} ms`);
console.log(`SMTP transaction with policy:    p50 ${on.p50.toFixed(2)} ms, p99 ${on.p99.toFixed(2)} ms`);
console.log(
  `added latency: p50 ${(on.p50 - off.p50).toFixed(2)} ms, p99 ${(on.p99 - off.p99).toFixed(2)} ms`,
);
console.log(`Redis round trips per message (all stages): ${(trips / Math.max(1, msgs)).toFixed(2)}`);
console.log(`policy decisions per second (one instance, 64 in flight): ${rate.toFixed(0)}`);
process.exit(0);
