import { DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS, type Bus } from '@mailyard/bus';
import { LEGACY_OUTBOUND_DELAY_QUEUE_PREFIX, outboundDelayQueue } from '@mailyard/contracts';
import type { Logger } from '@mailyard/observability';

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
  schedule: readonly number[],
  logger: Logger,
): { stop(): void } {
  let left = [...new Set([...schedule, ...DEFAULT_OUTBOUND_RETRY_SCHEDULE_MS])].map((d) =>
    outboundDelayQueue(d, LEGACY_OUTBOUND_DELAY_QUEUE_PREFIX),
  );
  let timer: NodeJS.Timeout | null = null;
  let stopped = false;
  const pass = async (): Promise<void> => {
    if (!bus.connected) {
      if (!stopped) timer = setTimeout(() => void pass(), UNCONNECTED_RETRY_MS).unref();
      return;
    }
    const kept: string[] = [];
    for (const name of left) {
      const gone = await bus.deleteQueueIfEmpty(name).catch((err: unknown) => {
        logger.debug({ err, queue: name }, 'cannot look at an old delay queue now');
        return false;
      });
      if (!gone) kept.push(name);
    }
    const removed = left.filter((q) => !kept.includes(q));
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
