import { execFile } from 'node:child_process';
import { connect, type ChannelModel } from 'amqplib';
import type { Redis } from 'ioredis';
import { AppPasswords, LoginGuard } from '@mailyard/auth';
import { loadConfig } from '@mailyard/config';
import { ENVELOPE_HEADER, Queues, envelopeFor, parseEnvelope, type Envelope } from '@mailyard/contracts';
import { DkimKeyStore, DkimSigner } from '@mailyard/dkim';
import { createRuntime, type Runtime } from '@mailyard/runtime';
import { RawSmtp, startTcpProxy, waitFor, type TcpProxy } from '@mailyard/testkit';
import { startPlatform, type Platform, type PlatformOptions } from '../../../test/harness.js';
import { buildMsa, defaultDeps, msaSchema, type Msa } from '../src/index.js';

export const PASSWORD = 'correct horse battery staple';

export interface MsaTestbed {
  p: Platform;
  msa: Msa;
  rt: Runtime;
  apps: AppPasswords;
  /** A proxy between the MSA and RabbitMQ, when asked for (to cut the broker away). */
  brokerProxy: TcpProxy | null;
  /** Builds another MSA on the same platform (other config); closed with the testbed. */
  another(overrides: Record<string, unknown>): Promise<Msa>;
  /** Waits for the message with this queue id in the `outbound` queue and takes it. */
  takeOutbound(queueId: string): Promise<{ body: Buffer; envelope: Envelope }>;
  close(): Promise<void>;
}

/**
 * The platform of test/harness.ts (RabbitMQ vhost, Redis prefix, DNS server, the real
 * delivery service writing to a temporary Maildir) with an MSA on top, built with the
 * same composition function main.ts uses.
 */
export async function startMsaTestbed(
  opts: {
    platform?: PlatformOptions;
    msa?: Record<string, unknown>;
    proxyBroker?: boolean;
    /** Keeps the login lockout on another Redis (one a test can make fail). */
    guardRedis?: Redis;
    /** Keeps the DKIM keys on another Redis (one a test can make fail). */
    dkimRedis?: Redis;
  } = {},
): Promise<MsaTestbed> {
  const p = await startPlatform(opts.platform);
  let brokerProxy: TcpProxy | null = null;
  let amqpUrl = p.env.AMQP_URL!;
  if (opts.proxyBroker) {
    brokerProxy = await startTcpProxy({ host: '127.0.0.1', port: 5672 });
    const u = new URL(amqpUrl);
    u.port = String(brokerProxy.port);
    amqpUrl = u.toString();
  }
  const built: { msa: Msa; rt: Runtime }[] = [];
  const build = async (overrides: Record<string, unknown>) => {
    const config = loadConfig(msaSchema, {
      env: {},
      overrides: {
        amqp_url: amqpUrl,
        redis_url: p.env.REDIS_URL,
        redis_prefix: p.env.REDIS_PREFIX,
        http_port: 0,
        listen_address: '127.0.0.1',
        log_level: process.env.TEST_LOG_LEVEL ?? 'silent',
        myhostname: 'submit.mailyard.test',
        dns_servers: p.env.DNS_SERVERS,
        submission_port: 0,
        submissions_port: 0,
        // like mta-inbound: asks the policy service when the platform runs one
        policy_enabled: !!opts.platform?.policy,
        ...(opts.msa ?? {}),
        ...overrides,
      },
    });
    const rt = await createRuntime('msa', config);
    const msa = buildMsa(config, {
      ...defaultDeps(config, rt, opts.guardRedis ? { guard: new LoginGuard(opts.guardRedis) } : {}),
      // keys a test adds are used at once (production caches a domain's keys for 30 s)
      dkim: config.dkim_signing
        ? new DkimSigner(new DkimKeyStore(opts.dkimRedis ?? rt.redis), { cacheMs: 0 })
        : null,
    });
    await msa.start();
    await rt.bus.waitConnected();
    built.push({ msa, rt });
    return { msa, rt };
  };
  const first = await build({});
  let amqp: ChannelModel | null = null;
  const taken = new Map<string, { body: Buffer; envelope: Envelope }>();

  return {
    p,
    msa: first.msa,
    rt: first.rt,
    apps: new AppPasswords(p.redis.redis),
    brokerProxy,
    another: async (overrides) => (await build(overrides)).msa,
    async takeOutbound(queueId) {
      amqp ??= await connect(p.env.AMQP_URL!);
      const ch = await amqp.createChannel();
      try {
        return await waitFor(
          async () => {
            for (;;) {
              const msg = await ch.get(Queues.outbound, { noAck: true });
              if (!msg) break;
              const envelope = envelopeFor(
                parseEnvelope(msg.properties.headers?.[ENVELOPE_HEADER]),
                'outbound',
              );
              taken.set(envelope.queueId, { body: msg.content, envelope });
            }
            return taken.get(queueId) ?? null;
          },
          { what: `message ${queueId} in the outbound queue` },
        );
      } finally {
        await ch.close();
      }
    },
    async close() {
      await amqp?.close();
      for (const b of built) {
        await b.msa.stop();
        await b.rt.close();
      }
      await brokerProxy?.close();
      await p.close();
    },
  };
}

/** A raw session on 587 from `from` (a 127.0.0.x address) after STARTTLS and a second EHLO. */
export async function tlsSession(port: number, from = '127.0.0.1'): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port, '127.0.0.1', { localAddress: from });
  if ((await c.read()).code !== 220) throw new Error('no greeting');
  await c.cmd('EHLO client.example.net');
  if ((await c.cmd('STARTTLS')).code !== 220) throw new Error('STARTTLS refused');
  await c.startTls();
  if ((await c.cmd('EHLO client.example.net')).code !== 250) throw new Error('EHLO refused after STARTTLS');
  return c;
}

/** The queue id from a `250 2.0.0 Ok: queued as ID` reply. */
export function queueIdOf(response: string): string {
  const id = /queued as ([A-Za-z0-9]+)/.exec(response)?.[1];
  if (!id) throw new Error(`no queue id in ${JSON.stringify(response)}`);
  return id;
}

/**
 * Runs a Python smtplib script (a second, independent client implementation). The
 * script gets `port` and `args` (a dict) and prints one JSON line as its result.
 */
export function python<T>(script: string, port: number, args: Record<string, unknown> = {}): Promise<T> {
  const prelude = [
    'import json, smtplib, ssl, sys',
    'port = int(sys.argv[1]); args = json.loads(sys.argv[2])',
    'ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE',
    'def out(v): print(json.dumps(v)); sys.stdout.flush()',
    '',
  ].join('\n');
  return new Promise((resolve, reject) => {
    execFile(
      'python3',
      ['-c', prelude + script, String(port), JSON.stringify(args)],
      { timeout: 20_000 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`python failed: ${err.message}\n${stderr}`));
        try {
          resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '') as T);
        } catch {
          reject(new Error(`python printed no JSON: ${stdout}\n${stderr}`));
        }
      },
    );
  });
}
