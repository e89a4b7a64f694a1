import Fastify, { type FastifyInstance } from 'fastify';
import { collectDefaultMetrics, Registry } from 'prom-client';

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

/** One registry per process, with Node's default metrics under the service's prefix. */
export function createRegistry(service: string): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: `mailyard_${service.replace(/-/g, '_')}_` });
  return registry;
}

/**
 * /metrics, /healthz (the process runs) and /readyz (every dependency connected),
 * the endpoints Prometheus and an orchestrator expect from each service.
 */
export function createOpsServer(registry: Registry, checks: ReadinessCheck[]): OpsServer {
  const all = [...checks];
  const app = Fastify({ logger: false });
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
