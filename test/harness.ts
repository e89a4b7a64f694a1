import { execFile } from 'node:child_process';
import { Redis } from 'ioredis';
import { loadConfig } from '@mailyard/config';
import { Directory } from '@mailyard/directory';
import { folderDir } from '@mailyard/mailstore';
import type { Logger } from '@mailyard/observability';
import { createRuntime, type Runtime } from '@mailyard/runtime';
import {
  buildDelivery,
  defaultDeps as deliveryDeps,
  deliverySchema,
  type DeliveryDeps,
  type DeliveryService,
} from '@mailyard/service-delivery';
import {
  buildMtaInbound,
  defaultDeps as mtaInboundDeps,
  mtaInboundSchema,
  type MtaInbound,
  type MtaInboundDeps,
} from '@mailyard/service-mta-inbound';
import {
  buildPolicy,
  defaultDeps as policyDeps,
  policySchema,
  type PolicyService,
} from '@mailyard/service-policy';
import {
  createTestRedis,
  createVhost,
  entryArgs,
  maildirMessages,
  startDnsServer,
  tempDir,
  type TestDnsServer,
  type TestRedis,
  type TestVhost,
  type Zone,
} from '@mailyard/testkit';

export interface Platform {
  vhost: TestVhost;
  redis: TestRedis;
  dns: TestDnsServer;
  maildir: string;
  directory: Directory;
  inbound: MtaInbound;
  inboundRt: Runtime;
  delivery: DeliveryService | null;
  deliveryRt: Runtime | null;
  /** The policy service, when started with `policy`. */
  policy: PolicyService | null;
  policyRt: Runtime | null;
  /** Common config values every service of this platform shares. */
  env: Record<string, string>;
  /** The paths of a folder's messages, in new/ and cur/ (testkit's maildirMessages). */
  inbox(account: string, folder?: string): string[];
  /**
   * Starts delivery; `config` is laid over the platform's delivery options (a raised limit,
   * say), and `deps` changes its dependencies (a Redis that interleaves, say).
   */
  startDelivery(config?: Record<string, unknown>, deps?: (own: DeliveryDeps) => DeliveryDeps): Promise<void>;
  stopDelivery(): Promise<void>;
  close(): Promise<void>;
}

export interface PlatformOptions {
  inbound?: Record<string, unknown>;
  /** In place of mta-inbound's own (a policy that fails or is slow, say). */
  inboundDeps?: Partial<MtaInboundDeps>;
  delivery?: Record<string, unknown>;
  /** Delivery's logger, in place of one at TEST_LOG_LEVEL (a test reads its lines). */
  deliveryLogger?: Logger;
  /** Start the policy service with this config and turn policy on in mta-inbound (default: policy off). */
  policy?: Record<string, unknown>;
  /** Clock of the policy decisions, in the service and in mta-inbound (greylisting, rate limits). */
  policyNow?: () => number;
  /** Start the delivery service too (default true). */
  withDelivery?: boolean;
  zone?: Zone;
  /** Use this AMQP URL instead of the vhost's (e.g. through a TcpProxy). */
  amqpUrl?: (vhostUrl: string) => string;
}

/**
 * Builds mta-inbound and delivery (and policy) in this process with the wiring their
 * main.ts uses, isolated by vhost, Redis prefix and temp Maildir. Recipient lookups are
 * not cached (DIRECTORY_CACHE_TTL 0) unless a test asks: a test changes the directory
 * and sends at once, faster than the change announcement reaches the cache.
 */
export async function startPlatform(opts: PlatformOptions = {}): Promise<Platform> {
  const vhost = await createVhost();
  const redis = createTestRedis();
  const dns = await startDnsServer({ 'localhost.test': { A: ['127.0.0.1'] }, ...(opts.zone ?? {}) });
  const tmp = tempDir();
  const common = {
    amqp_url: opts.amqpUrl ? opts.amqpUrl(vhost.url) : vhost.url,
    redis_url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    redis_prefix: redis.prefix,
    http_port: 0,
    listen_address: '127.0.0.1',
    log_level: process.env.TEST_LOG_LEVEL ?? 'silent',
    myhostname: 'mx.mailyard.test',
    dns_servers: dns.address,
  };
  const inboundConfig = loadConfig(mtaInboundSchema, {
    env: {},
    overrides: {
      ...common,
      smtp_port: 0,
      policy_enabled: !!opts.policy,
      directory_cache_ttl: 0,
      ...(opts.inbound ?? {}),
    },
  });
  let policy: PolicyService | null = null;
  let policyRt: Runtime | null = null;
  if (opts.policy) {
    const cfg = loadConfig(policySchema, {
      env: {},
      // the DNS checks ask questions a test's zone would have to answer: on only where a test asks
      overrides: { ...common, policy_delegation_port: 0, dns_check_interval: 0, ...opts.policy },
    });
    policyRt = await createRuntime('policy', cfg);
    policy = buildPolicy(cfg, {
      ...policyDeps(cfg, policyRt),
      ...(opts.policyNow ? { now: opts.policyNow } : {}),
    });
    await policyRt.bus.waitConnected();
    await policy.start();
  }
  const inboundRt = await createRuntime('mta-inbound', inboundConfig);
  const directory = new Directory(redis.redis);
  const inbound = buildMtaInbound(inboundConfig, {
    ...mtaInboundDeps(inboundConfig, inboundRt),
    // the intake decides DATA, scanners included: on the same clock as the service
    ...(opts.policyNow ? { now: opts.policyNow } : {}),
    ...opts.inboundDeps,
  });
  await inbound.start();
  await inboundRt.bus.waitConnected();

  const p: Platform = {
    vhost,
    redis,
    dns,
    maildir: tmp.path,
    directory,
    inbound,
    inboundRt,
    delivery: null,
    deliveryRt: null,
    policy,
    policyRt,
    env: {
      AMQP_URL: vhost.url,
      REDIS_URL: common.redis_url,
      REDIS_PREFIX: redis.prefix,
      MAILDIR_ROOT: tmp.path,
      DNS_SERVERS: dns.address,
      MYHOSTNAME: common.myhostname,
    },
    inbox: (account, folder = 'INBOX') => maildirMessages(folderDir(tmp.path, account, folder)),
    async startDelivery(config = {}, deps = (own) => own) {
      const cfg = loadConfig(deliverySchema, {
        env: {},
        overrides: {
          ...common,
          maildir_root: tmp.path,
          directory_cache_ttl: 0,
          ...(opts.delivery ?? {}),
          ...config,
        },
      });
      const rt = await createRuntime('delivery', cfg, opts.deliveryLogger);
      const svc = buildDelivery(cfg, deps(deliveryDeps(cfg, rt)));
      await rt.bus.waitConnected();
      await svc.start();
      p.delivery = svc;
      p.deliveryRt = rt;
    },
    async stopDelivery() {
      await p.delivery?.stop();
      await p.deliveryRt?.close();
      p.delivery = null;
      p.deliveryRt = null;
    },
    async close() {
      await p.stopDelivery();
      await inbound.stop();
      await inboundRt.close();
      await policy?.stop();
      await policyRt?.close();
      await dns.close();
      await redis.cleanup();
      await vhost.delete();
      tmp.cleanup();
    },
  };
  if (opts.withDelivery !== false) await p.startDelivery();
  return p;
}

/** Adds a domain and an account with a valid password. */
export async function addAccount(dir: Directory, address: string): Promise<void> {
  const domain = address.split('@')[1]!;
  if (!(await dir.isLocalDomain(domain))) await dir.addDomain(domain);
  await dir.addUser(address, 'correct horse battery staple');
}

export { Redis };

/**
 * Runs the `mailyard` command as the operator does (its own node process) against the
 * platform's Redis and Maildir root; rejects unless it exits 0.
 */
export function runMailyard(p: Platform, args: string[]): Promise<string> {
  const root = new URL('..', import.meta.url).pathname;
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [...entryArgs('packages/cli'), ...args],
      {
        cwd: root,
        env: {
          ...process.env,
          MAILYARD_CONFIG: '',
          REDIS_URL: p.env.REDIS_URL,
          REDIS_PREFIX: p.redis.prefix,
          MAILDIR_ROOT: p.maildir,
        },
        timeout: 60_000,
      },
      (err, stdout, stderr) =>
        err ? reject(new Error(`mailyard ${args.join(' ')}: ${stderr}`)) : resolve(stdout),
    );
  });
}
