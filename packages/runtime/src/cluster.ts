// Several processes per instance on one set of listening sockets (node:cluster): the
// primary forks the workers, counts what must be counted once per instance (connection
// slots), serves /metrics (every worker's, added up), /healthz and /readyz, and passes
// SIGTERM on; each worker runs the whole service with its own broker and Redis
// connections, as one more instance would.
import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import { AggregatorRegistry, createOpsServer, Registry, type Logger } from '@mailyard/observability';
import { EX_CONFIG } from '@mailyard/config';
import type { Runtime } from './index.js';

type ToPrimary =
  | { mailyard: 'slots-take'; id: number; key: string; max: number }
  | { mailyard: 'slots-give'; key: string }
  | { mailyard: 'answer'; id: number; value: unknown }
  | { mailyard: 'ready'; listening: Record<string, number> };
type ToWorker =
  | { mailyard: 'slots-taken'; id: number; ok: boolean }
  | { mailyard: 'ask'; id: number; what: 'metrics' | 'ready' };

/** Workers for a setting of 0 (the default): one per core. */
export function workerCount(setting: number): number {
  return setting > 0 ? setting : availableParallelism();
}

/** Whether this process is a worker forked by runPrimary. */
export function isWorker(): boolean {
  return cluster.isWorker;
}

/**
 * Connection slots of a worker, counted in the primary: the instance's count holds
 * however many workers share its sockets, and the slots of a worker that dies are
 * given back with it (SharedSlots of @mailyard/auth counts over every instance on top).
 */
export class ClusterSlots {
  private next = 0;
  private readonly waiting = new Map<number, (ok: boolean) => void>();

  constructor() {
    process.on('message', (m: ToWorker) => {
      if (m?.mailyard !== 'slots-taken') return;
      this.waiting.get(m.id)?.(m.ok);
      this.waiting.delete(m.id);
    });
  }

  take(key: string, max: number): Promise<boolean> {
    const id = ++this.next;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      send({ mailyard: 'slots-take', id, key, max });
    });
  }

  give(key: string): void {
    send({ mailyard: 'slots-give', key });
  }
}

function send(m: ToPrimary): void {
  // the primary is gone: the worker is stopping (see serveWorker)
  if (process.connected) process.send!(m);
}

/** In a worker: tells the primary it has started, and on which ports (for the primary's ready line). */
export function workerReady(listening: Record<string, number>): void {
  send({ mailyard: 'ready', listening });
}

/**
 * In a worker: answers the primary's questions (its metrics, whether it is ready) and
 * stops the service when the primary is gone.
 */
export function serveWorker(rt: Runtime): void {
  process.on('message', (m: ToWorker) => {
    if (m?.mailyard !== 'ask') return;
    const answer =
      m.what === 'metrics'
        ? rt.registry.getMetricsAsJSON()
        : rt.ops.app.inject({ method: 'GET', url: '/readyz' }).then((r) => r.statusCode === 200);
    void answer.then(
      (value) => send({ mailyard: 'answer', id: m.id, value }),
      () => send({ mailyard: 'answer', id: m.id, value: null }),
    );
  });
  // the primary died (SIGKILL, a crash): nobody would stop this worker otherwise
  process.on('disconnect', () => process.kill(process.pid, 'SIGTERM'));
}

export interface PrimaryOptions {
  /** The service's name, for its ready line. */
  service: string;
  workers: number;
  /** /metrics, /healthz, /readyz of the whole instance. */
  httpPort: number;
  listenAddress: string;
  shutdownGraceMs: number;
  logger: Logger;
  /** Node or V8 flags for the workers, after the primary's own. */
  workerFlags?: string[];
}

/** How long a worker has to answer the primary. */
const ASK_TIMEOUT_MS = 800;
/** A worker that dies is replaced after this long (a crash loop costs little). */
const RESPAWN_MS = 1000;

/** The primary: forks the workers, keeps them running, and stops them on SIGTERM. */
export async function runPrimary(o: PrimaryOptions): Promise<void> {
  const { logger } = o;
  if (o.workerFlags?.length) cluster.setupPrimary({ execArgv: [...process.execArgv, ...o.workerFlags] });
  const slots = new Map<string, number>();
  const held = new Map<Worker, Map<string, number>>();
  const asked = new Map<number, (value: unknown) => void>();
  let nextId = 0;
  let stopping = false;

  const count = (m: Map<string, number>, key: string, d: number) => {
    const n = (m.get(key) ?? 0) + d;
    if (n <= 0) m.delete(key);
    else m.set(key, n);
  };
  const onMessage = (w: Worker) => (m: ToPrimary) => {
    switch (m?.mailyard) {
      case 'slots-take': {
        const ok = !m.max || (slots.get(m.key) ?? 0) < m.max;
        if (ok) {
          count(slots, m.key, 1);
          count(held.get(w)!, m.key, 1);
        }
        w.send({ mailyard: 'slots-taken', id: m.id, ok } satisfies ToWorker);
        break;
      }
      case 'slots-give':
        if (held.get(w)?.has(m.key)) {
          count(slots, m.key, -1);
          count(held.get(w)!, m.key, -1);
        }
        break;
      case 'answer':
        asked.get(m.id)?.(m.value);
        asked.delete(m.id);
        break;
      case 'ready':
        started.add(w);
        listening = m.listening;
        announce();
        break;
    }
  };
  // The instance's one ready line, once every first worker has started (one that replaces
  // a dead worker says nothing more at info): the workers' ports, the primary's metrics.
  const started = new Set<Worker>();
  let listening: Record<string, number> = {};
  let httpPort: number | null = null;
  let announced = false;
  const announce = () => {
    if (announced || httpPort === null || started.size < o.workers) return;
    announced = true;
    const { metrics: _workerMetrics, ...ports } = listening;
    logger.info({ ...ports, workers: o.workers, metrics: httpPort }, `${o.service} ready`);
  };
  const fork = () => {
    const w = cluster.fork({ HTTP_PORT: '0' });
    held.set(w, new Map());
    w.on('message', onMessage(w));
    w.on('exit', (code, signal) => {
      for (const [key, n] of held.get(w) ?? []) count(slots, key, -n);
      held.delete(w);
      started.delete(w);
      if (stopping) return;
      // the worker said which setting is wrong and exited EX_CONFIG: the next one would
      // too, so the instance stops with that status instead of starting workers for ever
      if (code === EX_CONFIG) {
        shutdown('worker config error', EX_CONFIG);
        return;
      }
      logger.error({ worker: w.id, code, signal }, 'worker died; starting another');
      setTimeout(() => {
        if (!stopping) fork();
      }, RESPAWN_MS).unref();
    });
  };
  const ask = (w: Worker, what: 'metrics' | 'ready') =>
    new Promise<unknown>((resolve) => {
      const id = ++nextId;
      const timer = setTimeout(() => {
        asked.delete(id);
        resolve(null);
      }, ASK_TIMEOUT_MS);
      asked.set(id, (v) => {
        clearTimeout(timer);
        resolve(v);
      });
      if (w.isConnected()) w.send({ mailyard: 'ask', id, what } satisfies ToWorker);
    });
  const workers = () => [...held.keys()];

  /** /metrics: every worker's metrics, counters and histograms added up. */
  class InstanceRegistry extends Registry {
    override async metrics(): Promise<string> {
      const all = await Promise.all(workers().map((w) => ask(w, 'metrics')));
      const got = all.filter((x): x is Parameters<typeof AggregatorRegistry.aggregate>[0][number] => !!x);
      return AggregatorRegistry.aggregate(got).metrics();
    }
  }
  const ops = createOpsServer(new InstanceRegistry(), [
    { name: 'workers', ok: () => workers().length === o.workers },
    {
      name: 'workers-ready',
      ok: async () => (await Promise.all(workers().map((w) => ask(w, 'ready')))).every((r) => r === true),
    },
  ]);
  for (let i = 0; i < o.workers; i++) fork();
  httpPort = await ops.listen(o.httpPort, o.listenAddress);
  logger.debug({ workers: o.workers, metrics: httpPort }, 'primary started');
  announce();

  const shutdown = (signal: string, exitCode = 0) => {
    if (stopping) return;
    stopping = true;
    if (exitCode === 0) logger.info({ signal }, 'stopping the workers');
    setTimeout(() => {
      logger.error({ graceMs: o.shutdownGraceMs }, 'workers not stopped within the grace period, exiting');
      for (const w of workers()) w.process.kill('SIGKILL');
      process.exit(1);
    }, o.shutdownGraceMs + 500).unref();
    for (const w of workers()) w.process.kill('SIGTERM');
    const done = () => {
      if (held.size) return;
      void ops.close().then(() => process.exit(exitCode));
    };
    cluster.on('exit', done);
    done();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}
