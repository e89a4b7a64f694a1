import Fastify, { type FastifyInstance } from 'fastify';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';

export interface ReadinessCheck {
  name: string;
  /** Ready as far as this check goes; a check that throws or takes over a second is not. */
  ok: () => boolean | Promise<boolean>;
}

export interface OpsServer {
  app: FastifyInstance;
  registry: Registry;
  /** Adds a readiness check (a service's own: its listener, the consumers it needs). */
  addCheck(check: ReadinessCheck): void;
  listen(port: number, host: string): Promise<number>;
  close(): Promise<void>;
}

const CHECK_TIMEOUT_MS = 1000;
/** Longest a request to the ops port may take to arrive, headers and body. */
const OPS_REQUEST_TIMEOUT_MS = 10_000;
const READINESS_METRIC = 'mailyard_readiness_check';

/** What `mailyard_build_info` says: set at image build (deploy/Dockerfile), else `dev`/`unknown`. */
export interface BuildInfo {
  version: string;
  commit: string;
}

export function buildInfo(env: NodeJS.ProcessEnv = process.env): BuildInfo {
  return { version: env.MAILYARD_VERSION || 'dev', commit: env.MAILYARD_COMMIT || 'unknown' };
}

/**
 * One registry per service, with Node's default metrics under their standard names
 * (`process_resident_memory_bytes`, `nodejs_heap_size_used_bytes`...) and a `service`
 * label, so that stock Node.js dashboards work and services sharing a process stay apart,
 * and `mailyard_build_info{service,version,commit}` = 1.
 */
export function createRegistry(service: string, build: BuildInfo = buildInfo()): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, labels: { service } });
  const info = new Gauge({
    name: 'mailyard_build_info',
    help: 'Always 1; the running version and the commit it was built from',
    labelNames: ['service', 'version', 'commit'] as const,
    registers: [registry],
    // a service run as several worker processes is still one build
    aggregator: 'first',
  });
  info.set({ service, ...build }, 1);
  return registry;
}

/**
 * /metrics, /healthz (the process runs) and /readyz (every dependency connected),
 * the endpoints Prometheus and an orchestrator expect from each service.
 */
export function createOpsServer(registry: Registry, checks: ReadinessCheck[]): OpsServer {
  const all = [...checks];
  // What /readyz says, for alerting on a service that runs but cannot work (evaluated
  // at scrape time, each check with the same deadline as for /readyz).
  if (!registry.getSingleMetric(READINESS_METRIC))
    new Gauge({
      name: READINESS_METRIC,
      help: 'Each readiness check of /readyz: 1 passing, 0 failing',
      labelNames: ['check'] as const,
      registers: [registry],
      // across worker processes a check passes when it passes in every one
      aggregator: 'min',
      async collect() {
        const results = await Promise.all(all.map(passes));
        this.reset();
        all.forEach((c, i) => this.set({ check: c.name }, results[i] ? 1 : 0));
      },
    });
  const app = Fastify({
    logger: false,
    // A private port, but one request must not hold it: nothing here uploads or streams,
    // so a request has a few seconds in all (Node's defaults: headers 60 s, body never).
    requestTimeout: OPS_REQUEST_TIMEOUT_MS,
    http: {
      headersTimeout: OPS_REQUEST_TIMEOUT_MS,
      // how often Node looks for requests past their deadline (default 30 s)
      connectionsCheckingInterval: 1000,
    },
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', registry.contentType);
    return registry.metrics();
  });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const results = await Promise.all(all.map(passes));
    const failing = all.filter((_, i) => !results[i]).map((c) => c.name);
    if (failing.length) {
      reply.code(503);
      return { status: 'not ready', failing };
    }
    return { status: 'ready' };
  });
  return {
    app,
    registry,
    addCheck: (check) => void all.push(check),
    async listen(port, host) {
      await app.listen({ port, host });
      const addr = app.server.address();
      return typeof addr === 'object' && addr ? addr.port : port;
    },
    close: () => app.close(),
  };
}

async function passes(check: ReadinessCheck): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      Promise.resolve(check.ok()),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), CHECK_TIMEOUT_MS))),
    ]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A readiness check that asks something costly (the broker) at most once per `ttlMs`,
 * whatever the answer: /readyz stays cheap however often it is probed.
 */
export function cachedCheck(
  ttlMs: number,
  ask: () => Promise<boolean>,
  now: () => number = Date.now,
): () => Promise<boolean> {
  let until = 0;
  let last: Promise<boolean> = Promise.resolve(false);
  return () => {
    if (now() >= until) {
      until = now() + ttlMs;
      last = ask().catch(() => false);
    }
    return last;
  };
}
