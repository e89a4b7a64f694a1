import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ImapFlow } from 'imapflow';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { Operations } from '@mailyard/admin';
import type { AppPasswords, Authenticator, LoginHistory, TwoFactor } from '@mailyard/auth';
import type { Directory } from '@mailyard/directory';
import type { Logger } from '@mailyard/observability';
import type { QueueAdminDeps } from '@mailyard/queue-admin';
import type { WebmailConfig } from './config.js';
import { ConnectionLostError, errors } from './errors.js';
import type { ImapPool, ImapTarget } from './imap-pool.js';
import type { FolderInfo } from './api-types.js';
import { listFolders, selectFolder } from './mailbox.js';
import type { WebmailMetrics } from './metrics.js';
import type { MailNotifier } from './notifier.js';
import type { Session, SessionStore } from './sessions.js';

/**
 * The second step of the login (TOTP, packages/auth's TwoFactor): asked after the
 * password, before the session may do anything but answer it.
 */
export type SecondFactor = Pick<TwoFactor, 'enabled' | 'verify'>;

/** The msa's submission port, reached as IMAP is (TLS, the service login). */
export type SubmitTarget = ImapTarget;

/** What every route has: config, the stores, the IMAP pool and a few helpers. */
export interface Ctx {
  config: WebmailConfig;
  redis: Redis;
  directory: Directory;
  authenticator: Authenticator;
  secondFactor: SecondFactor | null;
  appPasswords: AppPasswords;
  history: LoginHistory;
  /** Two-factor enrolment on the account page (null: the platform offers none). */
  twoFactor: TwoFactor | null;
  sessions: SessionStore;
  pool: ImapPool;
  imap: ImapTarget;
  submit: SubmitTarget;
  notifier: MailNotifier;
  logger: Logger;
  metrics: WebmailMetrics;
  /** Bytes of attachments one message may carry (from message_size_limit). */
  attachmentLimit: number;
  now: () => number;
  /** The session's account's folders, checked: a name not among them is 404, never passed to IMAP. */
  folder(account: string, name: string): Promise<FolderInfo>;
  folders(account: string): Promise<FolderInfo[]>;
  /** Runs `fn` on a connection of `account` with `folder` selected (validated first). */
  /**
   * Runs `fn` on the folder selected. `reads`: `fn` changes nothing (a second run does no
   * harm), so it runs again on a new connection when the store ends the session under it.
   */
  inFolder<T>(
    account: string,
    folder: string,
    fn: (c: ImapFlow, f: FolderInfo) => Promise<T>,
    reads?: boolean,
  ): Promise<T>;
  /** The administrative operations the CLI calls too; `.as(admin)` for each request (adminOps). */
  operations: Operations;
  /** The broker and index of deferred mail (null: no broker, the queue page is unavailable). */
  queue: QueueAdminDeps | null;
}

declare module 'fastify' {
  interface FastifyRequest {
    session: Session | null;
    sessionId: string | null;
  }
  interface FastifyContextConfig {
    /** Who may call: anyone, a session in any stage, or a complete session (the default). */
    access?: 'public' | 'login' | 'partial' | 'session';
    /** An event stream: does not count as activity for the idle timeout. */
    passive?: boolean;
  }
}

/** The session of a route that requires one (the hook has checked it). */
export function sessionOf(req: FastifyRequest): Session {
  if (!req.session) throw errors.notLoggedIn();
  return req.session;
}

/**
 * The session of an administrator, for the admin console's routes. The role is read from
 * the directory on every request, so taking it away ends the console access at once.
 * A directory error is a 503 (a temporary failure), never "not an admin".
 */
export async function adminOf(req: FastifyRequest, ctx: Pick<Ctx, 'directory'>): Promise<Session> {
  const session = sessionOf(req);
  let admin: boolean;
  try {
    admin = await ctx.directory.isAdmin(session.account);
  } catch {
    throw errors.unavailable();
  }
  if (!admin) throw errors.notAdmin();
  return session;
}

/** Validates input with a zod schema; the first problem becomes a 400 naming the field. */
export function parse<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const r = schema.safeParse(value ?? {});
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const where = issue.path.length ? `${issue.path.join('.')}: ` : '';
  throw errors.badRequest(`${where}${issue.message}`);
}

/**
 * A message id in a JSON body: a number, or digits as a string. Nothing else is taken for
 * one (coercing would make `true` or `[5]` a message id and act on a message never named).
 */
export const uidSchema = z.preprocess(
  (v) => (typeof v === 'string' && /^\d{1,10}$/.test(v) ? Number(v) : v),
  z
    .number({ message: 'expected a message id' })
    .int('expected a message id')
    .min(1, 'expected a message id')
    .max(4294967295, 'expected a message id'),
);
/** A message id in a URL: digits only (no 1e3, no 0x10). */
export const uidParam = z
  .string()
  .regex(/^[1-9]\d{0,9}$/, 'expected a message id')
  .transform(Number)
  .refine((n) => n <= 4294967295, 'expected a message id');
export const folderSchema = z
  .string({ message: 'expected a folder name' })
  .min(1, 'expected a folder name')
  .max(1000, 'folder name too long')
  .refine((v) => !/[\u0000-\u001f\u007f]/.test(v), 'folder name with control characters');
/** Most messages one action takes: their UID set stays well inside an IMAP command line (64 KiB). */
export const MAX_UIDS = 5000;
export const uidListSchema = z
  .array(uidSchema, { message: 'expected a list of message ids' })
  .min(1, 'expected message ids')
  .max(MAX_UIDS, `at most ${MAX_UIDS} messages at once`);

/** Builds the folder helpers of Ctx: the list is kept a few seconds per account, for checking names. */
export function folderHelpers(pool: ImapPool, now: () => number) {
  const cache = new Map<string, { at: number; list: FolderInfo[] }>();
  const folders = async (account: string, fresh = false): Promise<FolderInfo[]> => {
    const hit = cache.get(account);
    if (!fresh && hit && now() - hit.at < 5000) return hit.list;
    const list = await pool.run(account, listFolders);
    cache.set(account, { at: now(), list });
    if (cache.size > 10_000) cache.delete(cache.keys().next().value!);
    return list;
  };
  const folder = async (account: string, name: string): Promise<FolderInfo> => {
    const find = (list: FolderInfo[]) => list.find((f) => f.path === name && f.selectable);
    const f = find(await folders(account)) ?? find(await folders(account, true));
    if (!f) throw errors.noSuchFolder();
    return f;
  };
  return {
    folders: (account: string) => folders(account, true),
    folder,
    async inFolder<T>(
      account: string,
      name: string,
      fn: (c: ImapFlow, f: FolderInfo) => Promise<T>,
      reads = false,
    ): Promise<T> {
      const f = await folder(account, name);
      let asked = false;
      const run = () =>
        pool.run(
          account,
          async (c) => {
            await selectFolder(c, f.path);
            asked = true;
            return fn(c, f);
          },
          f.path,
        );
      try {
        return await run();
      } catch (err) {
        // The store ended the connection under the request (it ends a session whose
        // selected folder was deleted or made again elsewhere, at its next command): before
        // anything was asked of the folder, or for work that only reads, a new connection
        // tries once more, and the user is not told to try again.
        if ((asked && !reads) || !(err instanceof ConnectionLostError)) throw err;
        return run();
      }
    },
  };
}

export type Reply = FastifyReply;
