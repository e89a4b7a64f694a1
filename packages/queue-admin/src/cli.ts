import type { Command } from 'commander';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { Bus } from '@mailyard/bus';
import { ConfigError, commonSchema, loadConfig, stringList } from '@mailyard/config';
import { outboundDelayQueue } from '@mailyard/contracts';
import { createLogger } from '@mailyard/observability';
import {
  QueueAdminError,
  deleteDeferred,
  listDeferred,
  retryDeferred,
  showDeferred,
  type QueueAdminDeps,
} from './admin.js';
import type { DeferredEntry } from './deferred-index.js';

/**
 * What the `queue` group needs from the CLI that registers it; the `mailyard` CLI's
 * CommandContext provides all of it (see packages/queue-admin/README.md for the wiring).
 */
export interface QueueCommandContext {
  /** Read for AMQP_URL, and for OUTBOUND_RETRY_SCHEDULE when the relays use another one. */
  env: NodeJS.ProcessEnv;
  print(line: string): void;
  withRedis<T>(fn: (redis: Redis) => Promise<T>): Promise<T>;
  /** Turns a one-sentence problem into the error the CLI reports (non-zero exit). */
  fail(message: string): Error;
}

const queueConfigSchema = z.object({
  amqp_url: commonSchema.amqp_url,
  amqp_password_file: commonSchema.amqp_password_file,
  /** Only the names matter here: which delay queues `retry --all` scans. */
  outbound_retry_schedule: stringList([]),
});

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/;
const UNIT: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

function ago(iso: string, now = Date.now()): string {
  const s = Math.round((Date.parse(iso) - now) / 1000);
  const abs = Math.abs(s);
  const text = abs < 120 ? `${abs}s` : abs < 7200 ? `${Math.round(abs / 60)}m` : `${Math.round(abs / 3600)}h`;
  return s >= 0 ? `in ${text}` : `${text} ago`;
}

/** How long the commands wait for RabbitMQ before saying it cannot be reached. */
const CONNECT_TIMEOUT_MS = 5000;

/** mailq-like: one block per message, queue id first. */
export function formatEntry(e: DeferredEntry): string[] {
  return [
    `${e.queueId}  ${e.size} bytes  received ${e.receivedAt}  from <${e.mailFrom}>`,
    `    attempts ${e.attempts}, next try ${e.nextTry} (${ago(e.nextTry)})`,
    `    (${(e.lastError ?? 'no error recorded').replace(/\s+/g, ' ').slice(0, 300)})`,
    ...e.recipients.map((r) => `    ${r}`),
  ];
}

export function registerQueueCommands(program: Command, ctx: QueueCommandContext): void {
  const withAdmin = <T>(fn: (admin: QueueAdminDeps) => Promise<T>): Promise<T> =>
    ctx.withRedis(async (redis) => {
      let cfg: z.infer<typeof queueConfigSchema>;
      try {
        cfg = loadConfig(queueConfigSchema, { env: ctx.env, ignoreUnknownFileKeys: true });
      } catch (err) {
        if (err instanceof ConfigError) throw ctx.fail(`config error: ${err.problems.join('; ')}`);
        throw err;
      }
      const delayQueues = cfg.outbound_retry_schedule.flatMap((d) => {
        const m = DURATION.exec(d);
        return m ? [outboundDelayQueue(Math.round(Number(m[1]) * (UNIT[m[2] ?? 's'] ?? 1000)))] : [];
      });
      // inspects only: the services declare the topology
      const bus = new Bus({
        url: cfg.amqp_url,
        logger: createLogger('mailyard-queue', 'silent'),
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
        return await fn({ bus, redis, ...(delayQueues.length ? { delayQueues } : {}) });
      } catch (err) {
        if (err instanceof QueueAdminError) throw ctx.fail(err.message);
        throw err;
      } finally {
        await bus.stop();
      }
    });

  const queue = program
    .command('queue')
    .description('inspect and manage deferred outbound mail (mailq, postqueue -f, postsuper -d)');

  queue
    .command('list')
    .description('list deferred messages: attempts, next try, last error, recipients')
    .option('--json', 'one JSON object a line')
    .action((opts: { json?: boolean }) =>
      withAdmin(async (admin) => {
        const entries = await listDeferred(admin);
        if (opts.json) {
          for (const e of entries) ctx.print(JSON.stringify(e));
          return;
        }
        if (!entries.length) {
          ctx.print('Mail queue is empty');
          return;
        }
        for (const e of entries) ctx.print(formatEntry(e).join('\n') + '\n');
        ctx.print(`-- ${entries.length} deferred message${entries.length === 1 ? '' : 's'}`);
      }),
    );

  queue
    .command('show')
    .description("show a deferred message's envelope and headers")
    .argument('<queue-id>', 'queue id, as `queue list` prints it')
    .action((id: string) =>
      withAdmin(async (admin) => {
        const found = await showDeferred(admin, id);
        if (!found) throw ctx.fail(`no deferred message with queue id ${id}`);
        for (const line of formatEntry(found.entry)) ctx.print(line);
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
        if (!id && !opts.all) throw ctx.fail('name a queue id or use --all');
        if (id && opts.all) throw ctx.fail('use either a queue id or --all, not both');
        const n = await retryDeferred(admin, id ? { queueId: id } : { all: true });
        if (id && !n) throw ctx.fail(`no deferred message with queue id ${id}`);
        ctx.print(`${n} message${n === 1 ? '' : 's'} queued for delivery`);
      }),
    );

  queue
    .command('delete')
    .description('delete a deferred message without a bounce (postsuper -d)')
    .argument('<queue-id>', 'queue id')
    .action((id: string) =>
      withAdmin(async (admin) => {
        if (!(await deleteDeferred(admin, id))) throw ctx.fail(`no deferred message with queue id ${id}`);
        ctx.print(`deleted ${id}`);
      }),
    );
}
