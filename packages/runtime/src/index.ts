import { Redis } from 'ioredis';
import type { z } from 'zod';
import { Bus, redactUrl } from '@mailyard/bus';
import {
  ConfigError,
  drainTime,
  exitOnConfigError,
  loadConfigOrExit,
  type commonSchema,
} from '@mailyard/config';
import { createResolver, type MailResolver } from '@mailyard/dns';
import { isWorker, workerReady } from './cluster.js';
import {
  createLogger,
  createOpsServer,
  createRegistry,
  Gauge,
  type Logger,
  type OpsServer,
  type ReadinessCheck,
  type Registry,
} from '@mailyard/observability';

type Common = z.infer<z.ZodObject<typeof commonSchema>>;

/** What every service gets from its process: logger, metrics, broker, Redis, DNS, ops endpoints. */

/** How long a process that has never reached Redis or RabbitMQ retries quietly before it warns. */
const REDIS_STARTUP_QUIET_MS = 10_000;
export interface Runtime {
  logger: Logger;
  registry: Registry;
  bus: Bus;
  redis: Redis;
  resolver: MailResolver;
  ops: OpsServer;
  /** Port of /metrics, /healthz, /readyz once started. */
  httpPort: number;
  /**
   * Closes `fn`'s resource with the runtime, before the broker and Redis: for what a
   * service's wiring opens on them (a second Redis connection listening for changes).
   */
  onClose(fn: () => void | Promise<void>): void;
  close(): Promise<void>;
}

export interface Service {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** What /readyz checks beyond the broker and Redis (a listener, the consumers it needs). */
  readiness?: ReadinessCheck[];
  /**
   * The ports it serves clients on once started, by name (`{ smtp: 25 }`): its one
   * startup line at info says them, with the metrics port.
   */
  listening?(): Record<string, number>;
}

/**
 * Builds the shared dependencies of a service. Broker and Redis connect in the
 * background and reconnect by themselves; /readyz reports ready only when both are up.
 */
export async function createRuntime(
  service: string,
  config: Common,
  logger = createLogger(service, config.log_level),
): Promise<Runtime> {
  const registry = createRegistry(service);
  const bus = new Bus({
    url: config.amqp_url,
    logger,
    name: `mailyard-${service}`,
    drainMs: drainTime(config.shutdown_grace),
  });
  new Gauge({
    name: 'mailyard_bus_held_messages',
    help: 'Messages held unacknowledged because a backend their handler needs (Redis, the store) is unavailable',
    labelNames: ['queue'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [queue, n] of bus.heldMessages()) this.set({ queue }, n);
    },
  });
  let redisWarned = false;
  const redis = new Redis(config.redis_url, {
    keyPrefix: config.redis_prefix,
    lazyConnect: true,
    // commands issued in the same tick leave in one write (fewer syscalls per message)
    enableAutoPipelining: true,
    maxRetriesPerRequest: 2,
    commandTimeout: config.redis_command_timeout,
    enableOfflineQueue: true,
    retryStrategy: (times) => Math.min(times * 200, 5000),
  });
  // before the first connection Redis may still be starting (pnpm start, compose): errors
  // in the first seconds are retried quietly; the first connection is part of "started"
  const since = Date.now();
  let redisReadyOnce = false;
  redis.on('error', (err: Error) => {
    if (!redisReadyOnce && Date.now() - since < REDIS_STARTUP_QUIET_MS) {
      logger.debug({ url: redactUrl(config.redis_url), err }, 'Redis not reachable yet, retrying');
      return;
    }
    if (!redisWarned) logger.warn({ url: redactUrl(config.redis_url), err }, 'Redis unreachable, retrying');
    redisWarned = true;
  });
  redis.on('ready', () => {
    redisWarned = false;
    logger[redisReadyOnce ? 'info' : 'debug']({ url: redactUrl(config.redis_url) }, 'connected to Redis');
    redisReadyOnce = true;
  });
  const ops = createOpsServer(registry, [
    { name: 'rabbitmq', ok: () => bus.connected },
    { name: 'redis', ok: () => redis.status === 'ready' },
    // every consumer the service registered is attached (a channel and a consumer tag)
    { name: 'consumers', ok: () => bus.consuming },
  ]);
  const resolver = createResolver({
    servers: config.dns_servers,
    cache: { maxEntries: config.dns_cache_size },
  });
  bus.start();
  redis.connect().catch(() => undefined);
  const httpPort = await ops.listen(config.http_port, config.listen_address);
  const closers: (() => void | Promise<void>)[] = [];
  return {
    logger,
    registry,
    bus,
    redis,
    resolver,
    ops,
    httpPort,
    onClose(fn) {
      closers.push(fn);
    },
    async close() {
      await ops.close();
      for (const fn of closers.splice(0)) await fn();
      await bus.stop();
      redis.disconnect();
    },
  };
}

/**
 * The whole of a service's main.ts: load config (exit 78 naming the key on error),
 * build, start, and on SIGTERM/SIGINT stop accepting, drain, close, within
 * SHUTDOWN_GRACE: the process exits then whatever is left.
 */
export async function runMain<S extends z.ZodObject>(
  service: string,
  schema: S,
  build: (config: z.infer<S>, rt: Runtime) => Service | Promise<Service>,
): Promise<void> {
  const config = (await loadConfigOrExit(service, schema)) as z.infer<S> & Common;
  const rt = await createRuntime(service, config);
  // a busy machine or a broker still starting beside us takes a few seconds: not an error yet
  const startupCheck = setTimeout(() => {
    if (!rt.bus.connected)
      rt.logger.warn(`RabbitMQ unreachable at ${redactUrl(config.amqp_url)}; still retrying`);
    if (rt.redis.status !== 'ready')
      rt.logger.warn(`Redis unreachable at ${redactUrl(config.redis_url)}; still retrying`);
  }, REDIS_STARTUP_QUIET_MS);
  startupCheck.unref();
  let phase: 'starting' | 'running' | 'stopping' = 'starting';
  rt.ops.addCheck({ name: 'running', ok: () => phase === 'running' });
  let svc: Service;
  try {
    svc = await build(config, rt);
    for (const check of svc.readiness ?? []) rt.ops.addCheck(check);
    await svc.start();
  } catch (err) {
    // a setting that only building could judge (a certificate file that cannot be read,
    // settings that do not go together): reported as the loader reports a bad value, one
    // line per problem and EX_CONFIG, for the operator to fix rather than a crash to read
    if (err instanceof ConfigError) exitOnConfigError(service, err);
    rt.logger.fatal({ err }, `${service} failed to start`);
    process.stderr.write(`${service}: ${(err as Error).message}\n`);
    process.exit(1);
  }
  phase = 'running';
  // One line at info says the service is ready and where; in a worker of a cluster the
  // primary says it once for all (see runPrimary), and each worker at debug.
  const ready = { ...svc.listening?.(), metrics: rt.httpPort };
  if (isWorker()) {
    rt.logger.debug(ready, `${service} ready`);
    workerReady(ready);
  } else rt.logger.info(ready, `${service} ready`);
  const shutdown = (signal: string) => {
    if (phase === 'stopping') return;
    phase = 'stopping';
    clearTimeout(startupCheck);
    rt.logger.info({ signal, graceMs: config.shutdown_grace }, 'shutting down');
    // the broker's connection is gone by the end of the grace, less a little for the exit:
    // one that stopped answering is destroyed then rather than waited for (its unacked
    // deliveries go back to their queues), so the process exits 0 in time
    const kept = config.shutdown_grace - drainTime(config.shutdown_grace);
    rt.bus.closeBy(Date.now() + config.shutdown_grace - kept / 4);
    // whatever a stop waits for, the process is gone at the end of the grace period
    setTimeout(() => {
      rt.logger.error({ graceMs: config.shutdown_grace }, 'not stopped within the grace period, exiting');
      process.exit(1);
    }, config.shutdown_grace).unref();
    void svc
      .stop()
      .then(() => rt.close())
      .then(
        () => process.exit(0),
        (err: unknown) => {
          rt.logger.error({ err }, 'stop failed');
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}
export * from './cluster.js';
export * from './redis.js';
