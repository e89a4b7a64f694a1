import type { Redis } from 'ioredis';
import { DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS, type Bus } from '@mailyard/bus';
import { legacyOutboundDelayQueue, outboundDelayQueue } from '@mailyard/contracts';
import type { Logger } from '@mailyard/observability';
import { withScanLease } from '@mailyard/queue-admin/scan-lease';

/** How often the classic delay queues that still hold messages are looked at again. */
const RETRY_MS = 10 * 60_000;
/** How soon they are looked at when the broker was not there. */
const UNCONNECTED_RETRY_MS = 5000;

/**
 * Removes the classic delay queues of earlier releases (`outbound.delay.<d>`, of this
 * schedule and the default one) as each becomes empty: once connected at start, then every
 * 10 minutes until none is left. What they hold still goes back to `outbound` when due; nothing is
 * taken from them here.
 */
export function retireLegacyDelayQueues(
  bus: Pick<Bus, 'deleteQueueIfEmpty' | 'connected'>,
  redis: Redis,
  schedule: readonly number[],
  logger: Logger,
): { stop(): void } {
  let left = [...new Set([...schedule, ...DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS])].map((d) =>
    legacyOutboundDelayQueue(outboundDelayQueue(d)),
  );
  let timer: NodeJS.Timeout | null = null;
  let stopped = false;
  const pass = async (): Promise<void> => {
    if (!bus.connected) {
      if (!stopped) timer = setTimeout(() => void pass(), UNCONNECTED_RETRY_MS).unref();
      return;
    }
    const { removed, kept } = await removeEmptyQueues(bus, redis, left).catch((err: unknown) => {
      logger.debug({ err }, 'cannot look at the old delay queues now');
      return { removed: [], kept: left };
    });
    if (removed.length > 0) logger.info({ queues: removed }, 'empty old classic delay queues removed');
    left = kept;
    if (!stopped && left.length > 0) timer = setTimeout(() => void pass(), RETRY_MS).unref();
  };
  void pass();
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}

/**
 * Deletes each of `queues` that is empty and unused, holding the queue tool's scan lease
 * (refused at once when a reader has it): those removed, and those the broker kept
 * (what was never declared is neither).
 */
export function removeEmptyQueues(
  bus: Pick<Bus, 'deleteQueueIfEmpty'>,
  redis: Redis,
  queues: readonly string[],
): Promise<{ removed: string[]; kept: string[] }> {
  return withScanLease(
    redis,
    () => new Error('the queue tool is reading the delay queues'),
    async () => {
      const out = { removed: [] as string[], kept: [] as string[] };
      for (const name of queues) {
        const result = await bus.deleteQueueIfEmpty(name);
        if (result !== 'absent') out[result].push(name);
      }
      return out;
    },
    0,
  );
}
