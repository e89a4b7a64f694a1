import {
  deleteDeadLetters,
  deleteDeferred,
  listDeadLetters,
  listDeferred,
  requeueDeadLetters,
  retryDeferred,
  showDeadLetters,
  showDeferred,
  type DeadLetter,
  type DeadLetterMessage,
  type DeferredEntry,
  type DeferredMessage,
  type QueueAdminDeps,
  type RequeueResult,
  type RetryTarget,
} from '@mailyard/queue-admin';
import type { AuditEntry } from './audit.js';

type Log = (action: string, target: string, detail?: AuditEntry['detail']) => Promise<unknown>;

/**
 * The deferred mail and the dead-letter queue (packages/queue-admin's
 * operations) with retries, requeues and deletions written to the audit log: what
 * `mailyard queue` and the console's queue page both call. Problems are
 * QueueAdminErrors, one sentence each.
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

  listDead(): Promise<DeadLetter[]> {
    return listDeadLetters(this.deps);
  }

  showDead(queueId: string): Promise<DeadLetterMessage | null> {
    return showDeadLetters(this.deps, queueId);
  }

  /** Sends dead letters back to their original queue; those that went, and those that stayed. */
  async requeueDead(target: RetryTarget): Promise<RequeueResult> {
    const result = await requeueDeadLetters(this.deps, target);
    if (result.requeued.length)
      await this.log('queue.dead.requeue', targetName(target), lettersDetail(result.requeued));
    return result;
  }

  /** Deletes dead letters for good; those deleted. */
  async deleteDead(target: RetryTarget): Promise<DeadLetter[]> {
    const deleted = await deleteDeadLetters(this.deps, target);
    if (deleted.length) await this.log('queue.dead.delete', targetName(target), lettersDetail(deleted));
    return deleted;
  }
}

const targetName = (target: RetryTarget) => ('queueId' in target ? target.queueId : '*');

/** How many, and (for `--all`) which queue ids: what an audit reader needs to find them in the logs. */
function lettersDetail(letters: readonly DeadLetter[]): AuditEntry['detail'] {
  return { messages: letters.length, queueIds: [...new Set(letters.map((l) => l.queueId))].slice(0, 100) };
}
