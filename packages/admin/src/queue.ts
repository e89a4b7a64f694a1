import {
  deleteDeferred,
  listDeferred,
  retryDeferred,
  showDeferred,
  type DeferredEntry,
  type DeferredMessage,
  type QueueAdminDeps,
  type RetryTarget,
} from '@mailyard/queue-admin';
import type { AuditEntry } from './audit.js';

type Log = (action: string, target: string, detail?: AuditEntry['detail']) => Promise<unknown>;

/**
 * The deferred outbound mail (packages/queue-admin's operations) with retries and
 * deletions written to the audit log: what `mailyard queue` and the console's queue
 * page both call. Problems are QueueAdminErrors, one sentence each.
 */
export class QueueOperations {
  constructor(
    private readonly deps: QueueAdminDeps,
    private readonly log: Log,
  ) {}

  list(): Promise<DeferredEntry[]> {
    return listDeferred(this.deps);
  }

  show(queueId: string): Promise<DeferredMessage | null> {
    return showDeferred(this.deps, queueId);
  }

  /** Sends deferred mail back to delivery now; how many messages went. */
  async retry(target: RetryTarget): Promise<number> {
    const n = await retryDeferred(this.deps, target);
    if (n) await this.log('queue.retry', 'queueId' in target ? target.queueId : '*', { messages: n });
    return n;
  }

  /** Deletes every deferred message of a queue id without a bounce; how many there were. */
  async delete(queueId: string): Promise<number> {
    const n = await deleteDeferred(this.deps, queueId);
    if (n) await this.log('queue.delete', queueId, { messages: n });
    return n;
  }
}
