import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import {
  LIST_STAGE,
  RESTRICTION_LISTS,
  listChecks,
  nothingRecorded,
  tableKind,
} from '@mailyard/policy-rules';
import { stayedSentence, type RequeueResult } from '@mailyard/queue-admin';
import type {
  AdminDeadLetter,
  AdminDeadLetterMessage,
  AdminExplain,
  AdminPolicy,
  AdminQueueEntry,
  AdminQueueMessage,
} from './admin-api-types.js';
import { adminRoute } from './admin-ops.js';
import { parse, type Ctx } from './context.js';
import { ApiError, errors } from './errors.js';

const queueId = z.object({
  id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'expected a queue id (letters, digits, . _ -)'),
});
const listName = z.object({ list: z.string().min(1).max(64) });
const tableName = z.object({ table: z.string().min(1).max(64) });
const entry = z.string().trim().min(1, 'expected an entry').max(512, 'entry too long');

const noSuchQueued = (id: string) =>
  new ApiError(404, 'not_found', `No deferred message with queue id ${id}`);
const noSuchDeadLetter = (id: string) => new ApiError(404, 'not_found', `No dead letter with queue id ${id}`);

const letters = (n: number) => `${n} dead letter${n === 1 ? '' : 's'}`;

/**
 * A requeue's answer: how many went back; when any stayed (from a queue requeue cannot
 * send to, or nothing takes it now), 409 with the sentence `mailyard queue dead requeue`
 * prints, those that went first, and which stayed with why.
 */
function requeueAnswer({ requeued, kept }: RequeueResult): { requeued: number } {
  if (!kept.length) return { requeued: requeued.length };
  const went = requeued.length ? `${letters(requeued.length)} requeued; ` : '';
  throw new ApiError(409, 'not_requeued', went + stayedSentence(kept), {
    requeued: requeued.length,
    kept: kept.map((k) => ({ queueId: k.letter.queueId, why: k.why })),
  });
}

/**
 * The admin console's mail pages: the outbound queue (list, show, retry, delete) and the
 * dead letters (list, show, requeue, delete; the operations of packages/queue-admin,
 * audited, what `mailyard queue` and `mailyard queue dead` do), the policy lists and access tables (edited
 * through the same validation as `mailyard policy`), and `policy explain`.
 */
export function registerAdminMailRoutes(app: FastifyInstance, ctx: Ctx): void {
  const queue = () => {
    if (!ctx.queue) throw errors.unavailable();
    return ctx.queue;
  };

  // ---- outbound queue

  app.get(
    '/api/admin/queue',
    adminRoute(ctx, async (_req, { ops }): Promise<{ messages: AdminQueueEntry[] }> => ({
      messages: await ops.queue(queue()).list(),
    })),
  );

  app.get(
    '/api/admin/queue/:id',
    adminRoute(ctx, async (req, { ops }): Promise<AdminQueueMessage> => {
      const { id } = parse(queueId, req.params);
      const found = await ops.queue(queue()).show(id);
      if (!found) throw noSuchQueued(id);
      return { queueId: found.queueId, parts: found.parts.map((p) => p.entry), headers: found.headers };
    }),
  );

  app.post(
    '/api/admin/queue/:id/retry',
    adminRoute(ctx, async (req, { ops }) => {
      const { id } = parse(queueId, req.params);
      const n = await ops.queue(queue()).retry({ queueId: id });
      if (!n) throw noSuchQueued(id);
      return { retried: n };
    }),
  );

  app.post(
    '/api/admin/queue/retry-all',
    adminRoute(ctx, async (_req, { ops }) => ({ retried: await ops.queue(queue()).retry({ all: true }) })),
  );

  app.delete(
    '/api/admin/queue/:id',
    adminRoute(ctx, async (req, { ops }) => {
      const { id } = parse(queueId, req.params);
      const n = await ops.queue(queue()).delete(id);
      if (!n) throw noSuchQueued(id);
      return { deleted: id, messages: n };
    }),
  );

  // ---- dead letters

  app.get(
    '/api/admin/dead-letters',
    adminRoute(ctx, async (_req, { ops }): Promise<{ letters: AdminDeadLetter[] }> => ({
      letters: await ops.queue(queue()).listDead(),
    })),
  );

  app.get(
    '/api/admin/dead-letters/:id',
    adminRoute(ctx, async (req, { ops }): Promise<AdminDeadLetterMessage> => {
      const { id } = parse(queueId, req.params);
      const found = await ops.queue(queue()).showDead(id);
      if (!found) throw noSuchDeadLetter(id);
      return found;
    }),
  );

  app.post(
    '/api/admin/dead-letters/:id/requeue',
    adminRoute(ctx, async (req, { ops }) => {
      const { id } = parse(queueId, req.params);
      const result = await ops.queue(queue()).requeueDead({ queueId: id });
      if (!result.requeued.length && !result.kept.length) throw noSuchDeadLetter(id);
      return requeueAnswer(result);
    }),
  );

  app.post(
    '/api/admin/dead-letters/requeue-all',
    adminRoute(ctx, async (_req, { ops }) =>
      requeueAnswer(await ops.queue(queue()).requeueDead({ all: true })),
    ),
  );

  app.delete(
    '/api/admin/dead-letters/:id',
    adminRoute(ctx, async (req, { ops }) => {
      const { id } = parse(queueId, req.params);
      const n = (await ops.queue(queue()).deleteDead({ queueId: id })).length;
      if (!n) throw noSuchDeadLetter(id);
      return { deleted: id, letters: n };
    }),
  );

  // ---- policy lists and access tables

  app.get(
    '/api/admin/policy',
    adminRoute(ctx, async (_req, { ops }): Promise<AdminPolicy> => {
      const rules = ops.policy();
      const lists = await Promise.all(
        RESTRICTION_LISTS.map(async (name) => ({
          name,
          stage: LIST_STAGE[name],
          entries: await rules.list(name),
        })),
      );
      return { lists, checks: listChecks() };
    }),
  );

  /**
   * Replaces a list; every entry is checked first (an unknown restriction is a 400 naming
   * it). With `previous`, the list as the page loaded it, a list changed meanwhile (by
   * `mailyard policy`, another console) is a 409 saying what it is now, not overwritten.
   */
  app.put(
    '/api/admin/policy/lists/:list',
    adminRoute(ctx, async (req, { ops }) => {
      const { list } = parse(listName, req.params);
      const entries = z.array(entry).max(100, 'at most 100 entries');
      const body = parse(z.object({ entries, previous: entries.optional() }), req.body);
      return { list, entries: await ops.policy().set(list, body.entries, body.previous) };
    }),
  );

  /** Removes one entry, as `mailyard policy remove`; one that is not in the list is a 404 naming it. */
  app.post(
    '/api/admin/policy/lists/:list/delete',
    adminRoute(ctx, async (req, { ops }) => {
      const { list } = parse(listName, req.params);
      const body = parse(z.object({ entry }), req.body);
      return { list, entries: await ops.policy().remove(list, body.entry) };
    }),
  );

  app.post(
    '/api/admin/policy/lists/:list/reset',
    adminRoute(ctx, async (req, { ops }) => {
      const { list } = parse(listName, req.params);
      return { list, entries: await ops.policy().reset(list) };
    }),
  );

  app.get(
    '/api/admin/policy/access/:table',
    adminRoute(ctx, async (req, { ops }) => {
      const { table } = parse(tableName, req.params);
      const entries = Object.entries(await ops.policy().accessList(table))
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([key, action]) => ({ key, action }));
      return { table, entries };
    }),
  );

  app.post(
    '/api/admin/policy/access/:table',
    adminRoute(ctx, async (req, { ops }) => {
      const { table } = parse(tableName, req.params);
      const body = parse(z.object({ key: entry, action: entry }), req.body);
      const key = await ops.policy().accessSet(table, tableKind(body.key), body.key, body.action);
      return { table, key, action: body.action.trim() };
    }),
  );

  app.post(
    '/api/admin/policy/access/:table/delete',
    adminRoute(ctx, async (req, { ops }) => {
      const { table } = parse(tableName, req.params);
      const { key } = parse(z.object({ key: entry }), req.body);
      return { table, deleted: await ops.policy().accessDel(table, tableKind(key), key) };
    }),
  );

  /** Why mail was refused: the queue id, or the "ref" at the end of a refusal's reply. */
  app.get(
    '/api/admin/policy/explain/:id',
    adminRoute(ctx, async (req, { ops }): Promise<AdminExplain> => {
      const { id } = parse(
        z.object({
          id: z
            .string()
            .trim()
            .regex(/^[A-Za-z0-9._-]{1,64}$/, 'expected a queue id or reference'),
        }),
        req.params,
      );
      const record = await ops.policy().explain(id);
      if (!record) {
        const { message } = nothingRecorded(id);
        throw new ApiError(404, 'not_found', message.charAt(0).toUpperCase() + message.slice(1));
      }
      return record;
    }),
  );
}
