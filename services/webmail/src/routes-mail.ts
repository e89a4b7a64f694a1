import { WebmailKeys } from '@mailyard/admin';
import type { FastifyInstance } from 'fastify';
import type { ImapFlow } from 'imapflow';
import { z } from 'zod';
import { folderSchema, parse, sessionOf, uidListSchema, uidParam, type Ctx } from './context.js';
import { errors } from './errors.js';
import { made } from './imap-pool.js';
import type { ActionResult, FolderInfo, MessageView } from './api-types.js';
import { existingUids, listPage, specialFolder } from './mailbox.js';
import { loadMessage, parseStructure, sanitizeLoaded } from './message-view.js';
import { bodyCsp, bodyDocument, sanitizeComposeHtml, textToHtmlBody } from './sanitize.js';

const bool = z
  .enum(['1', '0', 'true', 'false', 'yes', 'no'], { message: 'expected 1 or 0' })
  .transform((v) => v === '1' || v === 'true' || v === 'yes')
  .optional();

const listSchema = z.object({
  folder: folderSchema,
  offset: z.coerce.number().int().min(0).max(10_000_000).default(0),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  sort: z.enum(['arrival', 'date', 'from', 'subject', 'size']).default('arrival'),
  order: z.enum(['asc', 'desc']).default('desc'),
  // IMAP can carry no NUL in a string (RFC 9051 §4.3), not even as a literal
  q: z
    .string()
    .max(500)
    .refine((v) => !v.includes('\u0000'), 'search text with a NUL character')
    .default(''),
  unread: bool,
  flagged: bool,
  threads: bool,
  exclude: z
    .string()
    .max(4000)
    .regex(/^[1-9]\d{0,9}(,[1-9]\d{0,9})*$/)
    .optional(),
});

const inFolder = z.object({ folder: folderSchema });
const partSchema = z
  .string()
  .regex(/^[1-9]\d{0,3}(\.[1-9]\d{0,3}){0,20}$/, 'expected a part number such as 2 or 1.2');
const bulk = z.object({ folder: folderSchema, uids: uidListSchema });

/** The flags the user may set; the rest are the server's or the webmail's own business. */
const FLAG_NAMES = {
  seen: '\\Seen',
  flagged: '\\Flagged',
  answered: '\\Answered',
  forwarded: '$Forwarded',
} as const;
const flagList = z
  .array(z.enum(Object.keys(FLAG_NAMES) as [keyof typeof FLAG_NAMES]))
  .max(4)
  .default([]);

/** The images types shown inline from /parts (never SVG or HTML: they could carry script). */
const INLINE_TYPES = /^image\/(png|jpe?g|gif|webp|bmp)$/i;

/** Redis set of senders whose mail may load remote content, per account (removed with it). */
const remoteKey = WebmailKeys.remoteSenders;

export function registerMailRoutes(app: FastifyInstance, ctx: Ctx): void {
  app.get('/api/folders', async (req) => {
    return { folders: await ctx.folders(sessionOf(req).account) };
  });

  app.get('/api/messages', async (req) => {
    const q = parse(listSchema, req.query);
    const { account } = sessionOf(req);
    return ctx.inFolder(
      account,
      q.folder,
      (c) =>
        listPage(c, {
          offset: q.offset,
          limit: q.limit,
          sort: q.sort,
          reverse: q.order === 'desc',
          q: q.q.trim(),
          unread: q.unread ?? false,
          flagged: q.flagged ?? false,
          threads: q.threads ?? false,
          exclude: q.exclude?.split(',').map(Number),
        }),
      true,
    );
  });

  const remoteAllowedFor = async (account: string, view: { from: { address: string }[] }) => {
    const sender = view.from[0]?.address.toLowerCase();
    return sender ? (await ctx.redis.sismember(remoteKey(account), sender)) === 1 : false;
  };

  app.get('/api/messages/:uid', async (req): Promise<MessageView> => {
    const uid = parse(uidParam, (req.params as { uid: string }).uid);
    const { folder } = parse(inFolder, req.query);
    const { account } = sessionOf(req);
    const msg = await ctx.inFolder(account, folder, (c, f) => loadMessage(c, f.path, uid), true);
    const remoteAllowed = await remoteAllowedFor(account, msg.view);
    const clean = sanitizeLoaded(msg, remoteAllowed);
    if (clean && !remoteAllowed) ctx.metrics.remoteContentBlocked.inc(clean.blocked);
    if (clean) ctx.metrics.trackersRemoved.inc(clean.trackers);
    return {
      ...msg.view,
      html: clean !== null,
      privacy: {
        blocked: clean?.blocked ?? 0,
        trackers: clean?.trackers ?? 0,
        unwrapped: clean?.unwrapped ?? 0,
        remoteAllowed,
      },
    };
  });

  /**
   * The HTML body as its own document, for a sandboxed iframe: sanitised, under a CSP of
   * its own that lets nothing load but images in the message, and remote images only with
   * `remote=1` or for an allowed sender.
   */
  app.get('/api/messages/:uid/body', async (req, reply) => {
    const uid = parse(uidParam, (req.params as { uid: string }).uid);
    const q = parse(inFolder.extend({ remote: bool }), req.query);
    const { account } = sessionOf(req);
    const msg = await ctx.inFolder(account, q.folder, (c, f) => loadMessage(c, f.path, uid), true);
    const allow = q.remote === true || (await remoteAllowedFor(account, msg.view));
    const clean = sanitizeLoaded(msg, allow);
    const body = clean ? clean.html : textToHtmlBody(msg.view.text);
    return reply
      .header('content-type', 'text/html; charset=utf-8')
      .header('content-security-policy', bodyCsp(allow))
      .header('x-frame-options', 'SAMEORIGIN')
      .header('cache-control', 'no-store')
      .send(bodyDocument(body));
  });

  /** An attachment (or inline image): the decoded bytes of one body part. */
  app.get('/api/messages/:uid/parts/:part', async (req, reply) => {
    const { uid: rawUid, part: rawPart } = req.params as { uid: string; part: string };
    const uid = parse(uidParam, rawUid);
    const part = parse(partSchema, rawPart);
    const q = parse(inFolder.extend({ inline: bool }), req.query);
    const { account } = sessionOf(req);
    const { data, info } = await ctx.inFolder(account, q.folder, async (c) => {
      const msg = await loadStructureOnly(c, uid);
      const att = msg.find((a) => a.part === part);
      if (!att) throw errors.noSuchPart();
      const dl = await c.download(String(uid), part, { uid: true });
      if (!dl.content) throw errors.noSuchPart();
      const chunks: Buffer[] = [];
      for await (const chunk of dl.content) chunks.push(chunk as Buffer);
      return { data: Buffer.concat(chunks), info: att };
    });
    const inline = q.inline === true && INLINE_TYPES.test(info.type);
    return reply
      .header('content-type', inline ? info.type : 'application/octet-stream')
      .header(
        'content-disposition',
        `${inline ? 'inline' : 'attachment'}; filename*=UTF-8''${encodeURIComponent(info.filename)}`,
      )
      .header('content-security-policy', "default-src 'none'; sandbox")
      .send(data);
  });

  /** A draft as the editor needs it back. */
  app.get('/api/messages/:uid/draft', async (req) => {
    const uid = parse(uidParam, (req.params as { uid: string }).uid);
    const { folder } = parse(inFolder, req.query);
    const { account } = sessionOf(req);
    const msg = await ctx.inFolder(account, folder, (c, f) => loadMessage(c, f.path, uid), true);
    const v = msg.view;
    const list = (a: { name: string; address: string }[]) =>
      a.map((x) => (x.name ? `"${x.name.replace(/["\\]/g, '')}" <${x.address}>` : x.address)).join(', ');
    return {
      uid,
      from: v.from[0]?.address ?? account,
      fromName: v.from[0]?.name ?? '',
      to: list(v.to),
      cc: list(v.cc),
      bcc: list(v.bcc),
      subject: v.subject,
      text: v.text,
      html: msg.rawHtml === null ? null : sanitizeComposeHtml(msg.rawHtml),
      attachments: v.attachments.filter((a) => !a.inline),
      inReplyTo: v.inReplyTo,
      references: v.references,
      origin: msg.origin,
    };
  });

  // --- actions ------------------------------------------------------------------------

  const special = async (account: string, use: string, name: string): Promise<FolderInfo> => {
    const folders = await ctx.folders(account);
    const path = specialFolder(folders, use, name);
    const f = folders.find((x) => x.path === path);
    if (!f) throw errors.noSuchFolder();
    return f;
  };

  /**
   * Runs an action on the UIDs of `uids` that are in the folder, in one command for all of
   * them. The others (moved or deleted meanwhile, or never there) are answered as `skipped`;
   * 404 when none is left.
   */
  const onMessages = async <T extends object>(
    account: string,
    folder: string,
    uids: number[],
    fn: (c: ImapFlow, found: number[], f: FolderInfo) => Promise<T>,
  ): Promise<T & { skipped: number[] }> =>
    ctx.inFolder(account, folder, async (c, f) => {
      const found = await existingUids(c, uids);
      if (!found.length) throw errors.noSuchMessage();
      const here = new Set(found);
      const skipped = [...new Set(uids)].filter((u) => !here.has(u));
      return { ...(await fn(c, found, f)), skipped };
    });

  app.post('/api/messages/flags', async (req): Promise<ActionResult> => {
    const b = parse(bulk.extend({ add: flagList, remove: flagList }), req.body);
    const { account } = sessionOf(req);
    return onMessages(account, b.folder, b.uids, async (c, found) => {
      if (b.add.length)
        await made(c, () =>
          c.messageFlagsAdd(
            found,
            b.add.map((f) => FLAG_NAMES[f]),
            { uid: true },
          ),
        );
      if (b.remove.length)
        await made(c, () =>
          c.messageFlagsRemove(
            found,
            b.remove.map((f) => FLAG_NAMES[f]),
            { uid: true },
          ),
        );
      return { uids: found };
    });
  });

  const move = async (
    account: string,
    folder: string,
    uids: number[],
    to: FolderInfo,
    keywords?: [string[], string[]],
  ) =>
    onMessages(account, folder, uids, async (c, found, f) => {
      if (keywords) {
        if (keywords[0].length) await made(c, () => c.messageFlagsAdd(found, keywords[0], { uid: true }));
        if (keywords[1].length) await made(c, () => c.messageFlagsRemove(found, keywords[1], { uid: true }));
      }
      if (f.path === to.path) return { uids: found, to: to.path, moved: [] as number[] };
      const res = await made(c, () => c.messageMove(found, to.path, { uid: true }));
      const map = res.uidMap ?? new Map<number, number>();
      return { uids: found, to: to.path, moved: found.map((u) => map.get(u) ?? null) };
    });

  app.post('/api/messages/move', async (req): Promise<ActionResult> => {
    const b = parse(bulk.extend({ to: folderSchema }), req.body);
    const { account } = sessionOf(req);
    return move(account, b.folder, b.uids, await ctx.folder(account, b.to));
  });

  app.post('/api/messages/archive', async (req): Promise<ActionResult> => {
    const b = parse(bulk, req.body);
    const { account } = sessionOf(req);
    return move(account, b.folder, b.uids, await special(account, '\\Archive', 'Archive'));
  });

  /** Into Trash; from Trash, for good. */
  app.post('/api/messages/delete', async (req): Promise<ActionResult> => {
    const b = parse(bulk, req.body);
    const { account } = sessionOf(req);
    const trash = await special(account, '\\Trash', 'Trash');
    if (b.folder !== trash.path) return move(account, b.folder, b.uids, trash);
    return onMessages(account, b.folder, b.uids, async (c, found) => {
      await made(c, () => c.messageDelete(found, { uid: true }));
      return { uids: found, deleted: true };
    });
  });

  /**
   * Spam: marked $Junk and moved to Junk; not spam: $NotJunk and back to the inbox. The
   * retrieval service turns these moves into learn.spam / learn.ham for the filter.
   */
  app.post('/api/messages/spam', async (req): Promise<ActionResult> => {
    const b = parse(bulk.extend({ spam: z.boolean({ message: 'expected true or false' }) }), req.body);
    const { account } = sessionOf(req);
    const to = b.spam ? await special(account, '\\Junk', 'Junk') : await special(account, '\\Inbox', 'INBOX');
    return move(
      account,
      b.folder,
      b.uids,
      to,
      b.spam ? [['$Junk'], ['$NotJunk']] : [['$NotJunk'], ['$Junk']],
    );
  });

  /** Remote content always allowed (or no longer) for mail from this sender. */
  app.post('/api/remote-senders', async (req) => {
    const b = parse(
      z.object({
        address: z
          .string()
          .min(3)
          .max(320)
          .regex(/^[^\s@]+@[^\s@]+$/, 'expected an address'),
        allow: z.boolean(),
      }),
      req.body,
    );
    const { account } = sessionOf(req);
    const key = remoteKey(account);
    if (b.allow) await ctx.redis.sadd(key, b.address.toLowerCase());
    else await ctx.redis.srem(key, b.address.toLowerCase());
    return { address: b.address.toLowerCase(), allow: b.allow };
  });
}

/** The attachments of a message, from its structure only (no body is read). */
async function loadStructureOnly(c: ImapFlow, uid: number) {
  const m = await c.fetchOne(String(uid), { uid: true, bodyStructure: true }, { uid: true });
  if (!m || m.uid !== uid || !m.bodyStructure) throw errors.noSuchMessage();
  return parseStructure(m.bodyStructure).attachments;
}
