import { loadConfigOrExit } from '@mailyard/config';
import { createLogger } from '@mailyard/observability';
import { ClusterSlots, isWorker, runMain, runPrimary, serveWorker, workerCount } from '@mailyard/runtime';
import { retrievalSchema } from './config.js';
import { defaultDeps } from './deps.js';
import { buildRetrieval } from './retrieval.js';

// RETRIEVAL_WORKERS processes share the listeners; this one is their primary, or the only one
const config = isWorker() ? null : await loadConfigOrExit('retrieval', retrievalSchema);
const workers = config ? workerCount(config.retrieval_workers) : 1;
if (config && workers > 1) {
  await runPrimary({
    service: 'retrieval',
    workers,
    httpPort: config.http_port,
    listenAddress: config.listen_address,
    shutdownGraceMs: config.shutdown_grace,
    logger: createLogger('retrieval', config.log_level),
    // a worker just started grows its young generation from 1 MiB, collecting all the
    // way: the first listing of a large folder after a restart (index records, state and
    // snapshot of every message) spent a fourth of its time in those collections.
    // Starting at 16 MiB costs about 15 MiB of memory per worker.
    workerFlags: ['--min-semi-space-size=16'],
  });
} else {
  await runMain('retrieval', retrievalSchema, (config, rt) => {
    if (!isWorker()) return buildRetrieval(config, defaultDeps(config, rt));
    serveWorker(rt);
    return buildRetrieval(config, { ...defaultDeps(config, rt), slots: new ClusterSlots() });
  });
}
