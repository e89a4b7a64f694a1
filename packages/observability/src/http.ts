import Fastify, { type FastifyInstance } from 'fastify';
import { collectDefaultMetrics, Registry } from 'prom-client';

export interface ReadinessCheck {
  name: string;
  ok: () => boolean;
}

export interface OpsServer {
  app: FastifyInstance;
  registry: Registry;
  listen(port: number, host: string): Promise<number>;
  close(): Promise<void>;
}

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
  const app = Fastify({ logger: false });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', registry.contentType);
    return registry.metrics();
  });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const failing = checks.filter((c) => !c.ok()).map((c) => c.name);
    if (failing.length) {
      reply.code(503);
      return { status: 'not ready', failing };
    }
    return { status: 'ready' };
  });
  return {
    app,
    registry,
    async listen(port, host) {
      await app.listen({ port, host });
      const addr = app.server.address();
      return typeof addr === 'object' && addr ? addr.port : port;
    },
    close: () => app.close(),
  };
}
