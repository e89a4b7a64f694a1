import type { Command } from 'commander';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { Bus } from '@mailyard/bus';
import { ConfigError, commonSchema, loadConfigAsync, stringList } from '@mailyard/config';
// not the package's index: that loads fastify and prom-client, which no CLI command uses;
// nor createLogger, which loads pino at start even for the commands that never log
import { loadLogger } from '@mailyard/observability/load-logger';
import { plural } from '@mailyard/smtp-core/plural';
import {
  QueueAdminError,
  delayQueuesOf,
  deleteDeferred,
  listDeferred,
  retryDeferred,
  showDeferred,
  type DeferredMessage,
  type QueueAdminDeps,
  type RetryTarget,
} from './admin.js';
import {
  deleteDeadLetters,
  listDeadLetters,
  requeueDeadLetters,
  showDeadLetters,
  stayedSentence,
  type DeadLetter,
  type DeadLetterMessage,
  type RequeueResult,
} from './dead-letters.js';
import type { DeferredEntry } from './deferred-index.js';

/**
 * What the `queue` group needs from the CLI that registers it; the `mailyard` CLI's
 * CommandContext provides all of it (see packages/queue-admin/README.md for the wiring).
 */
export interface QueueCommandContext {
  /**
   * Read for AMQP_URL (and OUTBOUND_RETRY_SCHEDULE, not needed: the services record their
   * delay queues, see DELAY_QUEUES_KEY).
   */
  env: NodeJS.ProcessEnv;
  print(line: string): void;
  withRedis<T>(fn: (redis: Redis) => Promise<T>): Promise<T>;
  /** Turns a one-sentence problem into the error the CLI reports (non-zero exit). */
  fail(message: string): Error;
  /**
   * The operations the commands call (default: this package's, unaudited); the `mailyard`
   * CLI passes @mailyard/admin's, which write retries and deletions to the audit log.
   */
  operations?(deps: QueueAdminDeps): QueueOps;
}

/** What the `queue` commands do, over one broker connection and index. */
export interface QueueOps {
  list(): Promise<DeferredEntry[]>;
  show(queueId: string): Promise<DeferredMessage | null>;
  retry(target: RetryTarget): Promise<number>;
  /** How many messages of the queue id were deleted. */
  delete(queueId: string): Promise<number>;
  /** The dead-letter queue (./dead-letters.ts). */
  listDead(): Promise<DeadLetter[]>;
  showDead(queueId: string): Promise<DeadLetterMessage | null>;
  requeueDead(target: RetryTarget): Promise<RequeueResult>;
  /** Those deleted. */
  deleteDead(target: RetryTarget): Promise<DeadLetter[]>;
}

const plainOps = (deps: QueueAdminDeps): QueueOps => ({
  list: () => listDeferred(deps),
  show: (id) => showDeferred(deps, id),
  retry: (target) => retryDeferred(deps, target),
  delete: (id) => deleteDeferred(deps, id),
  listDead: () => listDeadLetters(deps),
  showDead: (id) => showDeadLetters(deps, id),
  requeueDead: (target) => requeueDeadLetters(deps, target),
  deleteDead: (target) => deleteDeadLetters(deps, target),
});

const queueConfigSchema = z.object({
  amqp_url: commonSchema.amqp_url,
  amqp_password_file: commonSchema.amqp_password_file,
  /** Only the names matter here: which delay queues `retry --all` scans. */
  outbound_retry_schedule: stringList([]),
});

function ago(iso: string, now = Date.now()): string {
  const s = Math.round((Date.parse(iso) - now) / 1000);
  const abs = Math.abs(s);
  const text = abs < 120 ? `${abs}s` : abs < 7200 ? `${Math.round(abs / 60)}m` : `${Math.round(abs / 3600)}h`;
  return s > 0 ? `in ${text}` : `${text} ago`;
}

/** An error's text on one line of a listing, as mailq cuts its reasons. */
const oneLine = (text: string) => text.replace(/\s+/g, ' ').slice(0, 300);

/** How long the commands wait for RabbitMQ before saying it cannot be reached. */
const CONNECT_TIMEOUT_MS = 5000;

/**
 * mailq-like: one block per queue id, its size, arrival and sender first, then for each
 * of its deferred messages (one, or the several delivery split its recipients into) the
 * attempts, next try and last error above the recipients they apply to, as mailq puts
 * each reason above its recipients.
 */
export function formatQueued(entries: readonly DeferredEntry[]): string[] {
  const [first] = entries;
  if (!first) return [];
  return [
    `${first.queueId}  ${plural(first.size, 'byte')}  received ${first.receivedAt}  from <${first.mailFrom}>`,
    ...entries.flatMap((e) => [
      `    attempts ${e.attempts}, next try ${e.nextTry} (${ago(e.nextTry)})`,
      `    (${oneLine(e.lastError ?? 'no error recorded')})`,
      ...e.recipients.map((r) => `    ${r}`),
    ]),
  ];
}

/** Entries grouped by queue id, each group and the groups in the order they came (soonest first). */
export function byQueueId<T extends { queueId: string }>(entries: readonly T[]): T[][] {
  const groups = new Map<string, T[]>();
  for (const e of entries) groups.set(e.queueId, [...(groups.get(e.queueId) ?? []), e]);
  return [...groups.values()];
}

/**
 * One block per queue id, as `queue list` prints deferred mail: the sender once, then for
 * each dead letter of it where it came from, its attempts, when and its size, the reason,
 * whether requeue can send it back, and the recipients.
 */
export function formatDeadLetters(letters: readonly DeadLetter[]): string[] {
  const [first] = letters;
  if (!first) return [];
  const when = (at: string | null) =>
    at ? `dead-lettered ${at} (${ago(at)})` : 'dead-lettered at a time not recorded';
  return [
    `${first.queueId}  ${first.mailFrom === null ? '(no envelope)' : `from <${first.mailFrom}>`}`,
    ...letters.flatMap((l) => [
      `    ${l.originalQueue ?? 'queue unknown'}, ${l.attempts ? plural(l.attempts, 'attempt') : 'attempts unknown'}, ${when(l.deadLetteredAt)}, ${plural(l.size, 'byte')}`,
      `    (${oneLine(l.reason ?? 'no reason recorded')})`,
      ...(l.requeueable ? [] : ['    requeue cannot send it back: delete it once done with']),
      ...l.recipients.map((r) => `    ${r}`),
    ]),
  ];
}

/**
 * A `list`: one JSON object a line, or a block per queue id and the count line (`count`
 * of the entries and of their queue ids), or the line that says the queue is empty.
 */
function printListing<T extends { queueId: string }>(
  ctx: Pick<QueueCommandContext, 'print'>,
  entries: readonly T[],
  how: {
    json: boolean | undefined;
    empty: string;
    format: (group: readonly T[]) => string[];
    count: (entries: number, queueIds: number) => string;
  },
): void {
  if (how.json) {
    for (const e of entries) ctx.print(JSON.stringify(e));
    return;
  }
  if (!entries.length) {
    ctx.print(how.empty);
    return;
  }
  const groups = byQueueId(entries);
  for (const group of groups) ctx.print(how.format(group).join('\n') + '\n');
  ctx.print(`-- ${how.count(entries.length, groups.length)}`);
}

/** The queue id or --all of a requeue or delete, or the usage error. */
function targetOf(
  id: string | undefined,
  all: boolean | undefined,
  ctx: Pick<QueueCommandContext, 'fail'>,
): RetryTarget {
  if (!id && !all) throw ctx.fail('name a queue id or use --all');
  if (id && all) throw ctx.fail('use either a queue id or --all, not both');
  return id ? { queueId: id } : { all: true };
}

export function registerQueueCommands(program: Command, ctx: QueueCommandContext): void {
  const withAdmin = <T>(fn: (admin: QueueOps) => Promise<T>): Promise<T> =>
    ctx.withRedis(async (redis) => {
      let cfg: z.infer<typeof queueConfigSchema>;
      try {
        cfg = await loadConfigAsync(queueConfigSchema, { env: ctx.env, ignoreUnknownFileKeys: true });
      } catch (err) {
        if (err instanceof ConfigError) throw ctx.fail(`config error: ${err.problems.join('; ')}`);
        throw err;
      }
      const delayQueues = delayQueuesOf(cfg.outbound_retry_schedule);
      // inspects only: the services declare the topology
      const bus = new Bus({
        url: cfg.amqp_url,
        logger: await loadLogger('mailyard-queue', 'silent'),
        name: 'mailyard-queue',
        declareTopology: false,
      });
      bus.start();
      try {
        try {
          await bus.waitConnected(CONNECT_TIMEOUT_MS);
        } catch (err) {
          throw new QueueAdminError((err as Error).message);
        }
        const deps = { bus, redis, ...(delayQueues.length ? { delayQueues } : {}) };
        return await fn((ctx.operations ?? plainOps)(deps));
      } catch (err) {
        if (err instanceof QueueAdminError) throw ctx.fail(err.message);
        throw err;
      } finally {
        await bus.stop();
      }
    });

  const queue = program
    .command('queue')
    .description('inspect and manage deferred mail (mailq, postqueue -f, postsuper -d) and dead letters');

  queue
    .command('list')
    .description('list deferred messages: attempts, next try, last error, recipients')
    .option('--json', 'one JSON object a line, one for each part of a queue id split in several')
    .action((opts: { json?: boolean }) =>
      withAdmin(async (admin) => {
        printListing(ctx, await admin.list(), {
          json: opts.json,
          empty: 'Mail queue is empty',
          format: formatQueued,
          // counted as mailq counts them: by queue id
          count: (n, ids) =>
            `${plural(ids, 'deferred message')}${n > ids ? ` (in ${plural(n, 'part')})` : ''}`,
        });
      }),
    );

  queue
    .command('show')
    .description("show a deferred message's envelope and headers")
    .argument('<queue-id>', 'queue id, as `queue list` prints it')
    .action((id: string) =>
      withAdmin(async (admin) => {
        const found = await admin.show(id);
        if (!found) throw ctx.fail(`no deferred message with queue id ${id}`);
        for (const line of formatQueued(found.parts.map((p) => p.entry))) ctx.print(line);
        ctx.print('');
        ctx.print(found.headers);
      }),
    );

  queue
    .command('retry')
    .description('send deferred messages back to delivery now (postqueue -i ID / -f)')
    .argument('[queue-id]', 'queue id; omit with --all')
    .option('--all', 'every deferred message')
    .action((id: string | undefined, opts: { all?: boolean }) =>
      withAdmin(async (admin) => {
        const n = await admin.retry(targetOf(id, opts.all, ctx));
        if (id && !n) throw ctx.fail(`no deferred message with queue id ${id}`);
        ctx.print(`${plural(n, 'message')} queued for delivery`);
      }),
    );

  queue
    .command('delete')
    .description('delete a deferred message, all its recipients, without a bounce (postsuper -d)')
    .argument('<queue-id>', 'queue id')
    .action((id: string) =>
      withAdmin(async (admin) => {
        const n = await admin.delete(id);
        if (!n) throw ctx.fail(`no deferred message with queue id ${id}`);
        ctx.print(`deleted ${id}${n > 1 ? ` (${n} parts)` : ''}`);
      }),
    );

  const dead = queue
    .command('dead')
    .description(
      'dead letters, what no consumer could handle: list, show, requeue, delete (postsuper -r, -d)',
    );
  const noDeadLetter = (id: string) => ctx.fail(`no dead letter with queue id ${id}`);

  dead
    .command('list')
    .description('list dead letters: queue id, original queue, attempts, when, size, reason, recipients')
    .option('--json', 'one JSON object a line, one for each dead letter')
    .action((opts: { json?: boolean }) =>
      withAdmin(async (admin) => {
        printListing(ctx, await admin.listDead(), {
          json: opts.json,
          empty: 'Dead-letter queue is empty',
          format: formatDeadLetters,
          count: (n, ids) => `${plural(n, 'dead letter')}${n > ids ? ` (${plural(ids, 'queue id')})` : ''}`,
        });
      }),
    );

  dead
    .command('show')
    .description("show a queue id's dead letters and their message's headers (an event's payload)")
    .argument('<queue-id>', 'queue id, as `queue dead list` prints it')
    .action((id: string) =>
      withAdmin(async (admin) => {
        const found = await admin.showDead(id);
        if (!found) throw noDeadLetter(id);
        for (const line of formatDeadLetters(found.letters)) ctx.print(line);
        ctx.print('');
        ctx.print(found.headers);
      }),
    );

  dead
    .command('requeue')
    .description('send dead letters back to their original queue, to be run afresh (postsuper -r)')
    .argument('[queue-id]', 'queue id; omit with --all')
    .option('--all', 'every dead letter')
    .action((id: string | undefined, opts: { all?: boolean }) =>
      withAdmin(async (admin) => {
        const { requeued, kept } = await admin.requeueDead(targetOf(id, opts.all, ctx));
        if (id && !requeued.length && !kept.length) throw noDeadLetter(id);
        if (requeued.length || !kept.length) ctx.print(`${plural(requeued.length, 'dead letter')} requeued`);
        if (kept.length) throw ctx.fail(stayedSentence(kept));
      }),
    );

  dead
    .command('delete')
    .description('delete dead letters for good, without a bounce (postsuper -d)')
    .argument('[queue-id]', 'queue id; omit with --all')
    .option('--all', 'every dead letter')
    .action((id: string | undefined, opts: { all?: boolean }) =>
      withAdmin(async (admin) => {
        const n = (await admin.deleteDead(targetOf(id, opts.all, ctx))).length;
        if (id && !n) throw noDeadLetter(id);
        ctx.print(
          id ? `deleted ${id}${n > 1 ? ` (${n} dead letters)` : ''}` : `deleted ${plural(n, 'dead letter')}`,
        );
      }),
    );
}
