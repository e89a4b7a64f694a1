import { randomBytes } from 'node:crypto';
import { WebmailKeys } from '@mailyard/admin';
import { isOutOfMemory } from '@mailyard/runtime/redis';
import type { FastifyInstance } from 'fastify';
import type { ImapFlow } from 'imapflow';
import { z } from 'zod';
import { folderSchema, parse, sessionOf, uidParam, uidSchema, type Ctx } from './context.js';
import {
  attachmentName,
  attachmentType,
  buildMessage,
  newMessageId,
  parseAddressList,
  submit,
  type Origin,
  type Outgoing,
  type OutgoingAttachment,
} from './compose.js';
import { errors } from './errors.js';
import { POOL_WAIT_MS } from './imap-pool.js';
import { existingUids, selectFolder, specialFolder } from './mailbox.js';
import { parseStructure } from './message-view.js';

/** Uploaded attachments wait in Redis (any instance may send the message) for a day. */
const UPLOAD_TTL_SECONDS = 24 * 3600;
/** Bytes of uploads one account may have waiting at once, in attachment limits. */
const UPLOADS_PER_ACCOUNT = 10;
// removed with the account (accountKeys)
const uploadKey = WebmailKeys.upload;
/** The account's waiting uploads: member `<id>:<size>`, score when it expires (s). */
const uploadsKey = WebmailKeys.uploads;

/**
 * Stores an upload unless the account's waiting ones would pass the cap (Redis also holds
 * the sessions, the directory and the lockout: one account must not fill it); -1 when
 * stored, else the bytes already waiting. Redis's clock, so that instances agree.
 *
 * The shebang (no flags) makes Redis 7 refuse the whole script with OOM before it runs
 * when Redis is at its maxmemory. Without it Redis checks memory only until the script's
 * first write command, and the ZREMRANGEBYSCORE comes first, even when it removes nothing:
 * the upload was then stored past maxmemory, in the Redis the sessions and logins need.
 */
const STORE_UPLOAD = `#!lua
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local used = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  used = used + tonumber(string.match(m, ':(%d+)$'))
end
if used + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return used end
redis.call('HSET', KEYS[1], 'name', ARGV[4], 'type', ARGV[5], 'size', ARGV[2], 'data', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), ARGV[7] .. ':' .. ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return -1
`;

/**
 * KEYS: the account's waiting uploads, then the uploads; ARGV: their members there. A
 * script, not a MULTI: Redis at its maxmemory refuses every command queued in a MULTI,
 * deletions too, and an upload removed is room given back, which is wanted most then.
 */
const DROP_UPLOADS = `
redis.call('DEL', unpack(KEYS, 2))
return redis.call('ZREM', KEYS[1], unpack(ARGV))`;

type UploadRedis = Ctx['redis'] & {
  webmailStoreUpload(
    key: string,
    index: string,
    ttl: number,
    size: number,
    cap: number,
    name: string,
    type: string,
    data: Buffer,
    id: string,
  ): Promise<number>;
};

function withUploadScript(redis: Ctx['redis']): UploadRedis {
  const r = redis as UploadRedis;
  if (typeof r.webmailStoreUpload !== 'function')
    redis.defineCommand('webmailStoreUpload', { numberOfKeys: 2, lua: STORE_UPLOAD });
  return r;
}
const uploadId = z.string().regex(/^[A-Za-z0-9_-]{22}$/, 'expected an upload id');

const attachmentRef = z.union([
  z.object({ upload: uploadId }),
  z.object({
    folder: folderSchema,
    uid: uidSchema,
    part: z.string().regex(/^[1-9]\d{0,3}(\.[1-9]\d{0,3}){0,20}$/, 'expected a part number'),
  }),
]);

const draftSchema = z.object({
  from: z.string({ message: 'expected a sender address' }).min(3).max(320),
  fromName: z.string().max(200).default(''),
  to: z.string().max(20_000).default(''),
  cc: z.string().max(20_000).default(''),
  bcc: z.string().max(20_000).default(''),
  subject: z.string().max(2000).default(''),
  text: z.string().max(4_000_000).default(''),
  html: z.string().max(6_000_000).nullable().default(null),
  attachments: z.array(attachmentRef).max(100, 'at most 100 attachments').default([]),
  inReplyTo: z.string().max(1000).nullable().default(null),
  references: z.string().max(20_000).nullable().default(null),
  /** The message this answers or forwards: marked \Answered or $Forwarded once sent. */
  origin: z
    .object({
      folder: folderSchema,
      uid: uidSchema,
      kind: z.enum(['reply', 'forward']),
      /** The folder's UIDVALIDITY where the message was read (the message view's); without it, not marked. */
      uidValidity: z
        .number({ message: 'origin.uidValidity: expected the folder’s UIDVALIDITY' })
        .int()
        .min(1)
        .max(0xffffffff)
        .nullable()
        .default(null),
    })
    .nullable()
    .default(null),
  /** The draft this replaces (removed once the new one is saved, or the message sent). */
  draftUid: uidSchema.nullable().default(null),
});
type DraftInput = z.infer<typeof draftSchema>;

export function registerComposeRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { pool, redis, logger, metrics } = ctx;
  /**
   * How long a save may hold the draft it replaces: longer than the save can take (its wait
   * for a connection of the account, then IMAP_TIMEOUT), so the marker never lapses under it.
   */
  const draftReplacingSeconds = Math.ceil((POOL_WAIT_MS + ctx.config.imap_timeout) / 1000) + 30;

  /** Removes uploads and their place in the account's cap; how many there were. */
  const dropUploads = async (account: string, ids: string[]): Promise<number> => {
    const sizes = await Promise.all(ids.map((id) => redis.hget(uploadKey(account, id), 'size')));
    const there = ids.filter((_, i) => sizes[i] !== null);
    if (!there.length) return 0;
    await redis.eval(
      DROP_UPLOADS,
      1 + there.length,
      uploadsKey(account),
      ...there.map((id) => uploadKey(account, id)),
      ...there.map((id) => `${id}:${sizes[ids.indexOf(id)]}`),
    );
    return there.length;
  };

  /**
   * The uploads `d` named, now kept in a draft or a sent message of their own: removed, so
   * that their room under the account's cap is free again.
   */
  const releaseUploads = async (account: string, d: DraftInput, where: string): Promise<void> => {
    const ids = [...new Set(d.attachments.flatMap((a) => ('upload' in a ? [a.upload] : [])))];
    if (!ids.length) return;
    await dropUploads(account, ids).catch((err: unknown) =>
      logger.warn({ account, err }, `uploads kept in ${where} not removed; they expire within a day`),
    );
  };

  /** The addresses the account may send as: itself and the aliases that lead to it. */
  const identities = async (account: string) => ctx.directory.addressesOf(account);

  app.get('/api/identities', async (req) => {
    const { account } = sessionOf(req);
    return { identities: (await identities(account)).map((address) => ({ address })), primary: account };
  });

  // --- uploads ------------------------------------------------------------------------

  void app.register(async (scope) => {
    // the body is the file itself, whatever its type; its name comes in X-Filename
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser(
      '*',
      { parseAs: 'buffer', bodyLimit: ctx.attachmentLimit },
      (_req, body, done) => done(null, body),
    );
    scope.post('/api/uploads', { bodyLimit: ctx.attachmentLimit }, async (req, reply) => {
      const { account } = sessionOf(req);
      const data = req.body;
      if (!Buffer.isBuffer(data)) throw errors.badRequest('expected the file as the request body');
      let filename = 'attachment';
      try {
        filename = decodeURIComponent(String(req.headers['x-filename'] ?? 'attachment'));
      } catch {
        throw errors.badRequest('X-Filename: expected a URI-encoded file name');
      }
      filename = attachmentName(filename);
      const contentType = attachmentType(String(req.headers['x-content-type'] ?? ''));
      const id = randomBytes(16).toString('base64url');
      const cap = UPLOADS_PER_ACCOUNT * ctx.attachmentLimit;
      const waiting = await withUploadScript(redis)
        .webmailStoreUpload(
          uploadKey(account, id),
          uploadsKey(account),
          UPLOAD_TTL_SECONDS,
          data.length,
          cap,
          filename,
          contentType,
          data,
          id,
        )
        .catch((err: unknown) => {
          throw isOutOfMemory(err) ? errors.noRoomForUploads() : err;
        });
      if (waiting >= 0) throw errors.uploadsWaiting(cap);
      // a client gone before it learnt the id (the draft discarded, the tab closed) can
      // never name this upload: removed, rather than left for a day under the account's cap
      const forsaken = () =>
        void dropUploads(account, [id]).catch((err: unknown) =>
          logger.warn({ account, err }, 'upload of a client gone not removed; it expires within a day'),
        );
      if (req.raw.socket.destroyed) forsaken();
      else reply.raw.once('close', () => reply.raw.writableFinished || forsaken());
      return { id, filename, type: contentType, size: data.length };
    });
  });

  app.delete('/api/uploads/:id', async (req) => {
    const id = parse(uploadId, (req.params as { id: string }).id);
    const { account } = sessionOf(req);
    if (!(await dropUploads(account, [id]))) throw errors.noSuchUpload();
    return { id, deleted: true };
  });

  // --- building a message from what the editor sent ----------------------------------------

  /**
   * One attachment's size as it will be in the message, and how to load it: the sizes
   * of all of them are added up before any is loaded, so that a request naming large
   * files (or one file a hundred times) is refused without holding them in memory.
   */
  const plan = async (
    account: string,
    ref: DraftInput['attachments'][number],
  ): Promise<{ size: number; load: () => Promise<OutgoingAttachment> }> => {
    if ('upload' in ref) {
      const key = uploadKey(account, ref.upload);
      const [name, type, size] = await redis.hmget(key, 'name', 'type', 'size');
      if (size === null) throw errors.noSuchUpload();
      return {
        size: Number(size),
        load: async () => {
          const content = await redis.hgetBuffer(key, 'data');
          if (!content) throw errors.noSuchUpload();
          return { filename: name ?? 'attachment', contentType: type ?? 'application/octet-stream', content };
        },
      };
    }
    // an attachment of a message of the user's own (forwarding, reopening a draft)
    const att = await ctx.inFolder(account, ref.folder, async (c) => {
      const m = await c.fetchOne(String(ref.uid), { uid: true, bodyStructure: true }, { uid: true });
      if (!m || m.uid !== ref.uid || !m.bodyStructure) throw errors.noSuchMessage();
      const found = parseStructure(m.bodyStructure).attachments.find((a) => a.part === ref.part);
      if (!found) throw errors.noSuchPart();
      return found;
    });
    return {
      // the file's size as parseStructure reckons it from the stored one; the real total is
      // checked again as the parts are loaded
      size: att.size,
      load: () =>
        ctx.inFolder(account, ref.folder, async (c) => {
          const dl = await c.download(String(ref.uid), ref.part, { uid: true });
          if (!dl.content) throw errors.noSuchPart();
          const chunks: Buffer[] = [];
          for await (const chunk of dl.content) chunks.push(chunk as Buffer);
          return { filename: att.filename, contentType: att.type, content: Buffer.concat(chunks) };
        }),
    };
  };

  const loadAttachments = async (
    account: string,
    refs: DraftInput['attachments'],
  ): Promise<OutgoingAttachment[]> => {
    const plans = [];
    for (const ref of refs) plans.push(await plan(account, ref));
    if (plans.reduce((n, p) => n + p.size, 0) > ctx.attachmentLimit)
      throw errors.tooLarge(ctx.attachmentLimit);
    const out: OutgoingAttachment[] = [];
    let total = 0;
    for (const p of plans) {
      const a = await p.load();
      total += a.content.length;
      // a part whose stored size said less than it holds: stopped as soon as it shows
      if (total > ctx.attachmentLimit) throw errors.tooLarge(ctx.attachmentLimit);
      out.push(a);
    }
    return out;
  };

  const outgoing = async (account: string, d: DraftInput, forSending: boolean): Promise<Outgoing> => {
    const from = d.from.trim().toLowerCase();
    const owned = await identities(account);
    // plus-addresses of an own address count too (the msa accepts them)
    const base = from.replace(/\+[^@]*@/, '@');
    if (!owned.includes(from) && !owned.includes(base)) throw errors.badSender(d.from);
    const to = parseAddressList(d.to, 'to');
    const cc = parseAddressList(d.cc, 'cc');
    const bcc = parseAddressList(d.bcc, 'bcc');
    if (forSending && !to.length && !cc.length && !bcc.length)
      throw errors.badRequest('to: expected a recipient');
    return {
      from: { name: d.fromName.trim(), address: from },
      to,
      cc,
      bcc,
      subject: d.subject,
      text: d.text,
      html: d.html,
      attachments: await loadAttachments(account, d.attachments),
      inReplyTo: d.inReplyTo,
      references: d.references,
    };
  };

  const folderPath = async (account: string, use: string, name: string) =>
    specialFolder(await ctx.folders(account), use, name);

  /** Removes a draft (after it was replaced or sent); a draft already gone is fine. */
  const dropDraft = async (c: ImapFlow, drafts: string, uid: number) => {
    await selectFolder(c, drafts);
    const found = await existingUids(c, [uid]);
    if (found.length) await c.messageDelete(found, { uid: true });
  };

  /**
   * Marks the message a sent reply or forward answers (\Answered, $Forwarded) when its UID
   * still names it: only while the folder's UIDVALIDITY is the one it was read under (a
   * folder deleted and made again numbers anew, RFC 9051 §2.3.1.1). An origin without one
   * (a draft saved before it was kept) is not marked: a mark missing is better than one on
   * another message. A fresh SELECT, not the connection's selection, gives the folder's
   * current UIDVALIDITY.
   */
  const markOrigin = async (c: ImapFlow, account: string, messageId: string, o: Origin) => {
    const where = await ctx.folder(account, o.folder);
    const { uidValidity } = await c.mailboxOpen(where.path);
    if (o.uidValidity === null || Number(uidValidity) !== o.uidValidity) {
      logger.info(
        { account, messageId, folder: where.path, was: o.uidValidity, now: Number(uidValidity) },
        o.uidValidity === null
          ? 'sent; its origin names no UIDVALIDITY, so the original is not marked'
          : 'sent; the folder of its original was made anew since, so the original is not marked',
      );
      return;
    }
    const found = await existingUids(c, [o.uid]);
    if (found.length)
      await c.messageFlagsAdd(found, [o.kind === 'reply' ? '\\Answered' : '$Forwarded'], { uid: true });
  };

  /** Saves the editor's state in Drafts (the front end calls this while the user types). */
  app.put('/api/drafts', async (req) => {
    const d = parse(draftSchema, req.body);
    const { account } = sessionOf(req);
    const m = await outgoing(account, d, false);
    const raw = await buildMessage(m, {
      messageId: newMessageId(m.from.address),
      date: new Date(ctx.now()),
      draft: { origin: d.origin },
    });
    const drafts = await folderPath(account, '\\Drafts', 'Drafts');
    // the same draft open in two windows: the first save to replace it does, the other is
    // told, rather than each leaving a draft of its own. While one replaces it a marker says
    // so (503: the other saves again shortly, and is told 409 only once the draft is gone).
    const replacing = d.draftUid ? WebmailKeys.draftReplacing(account, d.draftUid) : null;
    if (replacing && (await redis.set(replacing, '1', 'EX', draftReplacingSeconds, 'NX')) !== 'OK')
      throw errors.draftBusy();
    const saved = await pool
      .run(account, async (c) => {
        if (d.draftUid) {
          await selectFolder(c, drafts);
          if (!(await existingUids(c, [d.draftUid])).length) throw errors.draftChanged();
        }
        const res = await c.append(drafts, raw, ['\\Draft', '\\Seen']);
        if (!res) throw errors.unavailable();
        const uid = res.uid ?? null;
        // the attachments as parts of this draft, for the next save or the send: the ones
        // the editor named may be parts of the draft replaced below. Listed before that one
        // goes, so that a failure here leaves the editor's references good for a retry.
        let attachments: { folder: string; uid: number; part: string }[] = [];
        if (uid && d.attachments.length) {
          await selectFolder(c, drafts);
          const m = await c.fetchOne(String(uid), { uid: true, bodyStructure: true }, { uid: true });
          if (m && m.bodyStructure)
            attachments = parseStructure(m.bodyStructure)
              .attachments.filter((a) => !a.inline)
              .map((a) => ({ folder: drafts, uid, part: a.part }));
        }
        if (d.draftUid) await dropDraft(c, drafts, d.draftUid);
        return { uid, folder: drafts, attachments };
      })
      .finally(() => replacing && redis.del(replacing).catch(() => undefined));
    // the editor names the draft's parts from now on (when it got one for each)
    if (saved.attachments.length === d.attachments.length) await releaseUploads(account, d, 'a draft');
    return saved;
  });

  app.delete('/api/drafts/:uid', async (req) => {
    const uid = parse(uidParam, (req.params as { uid: string }).uid);
    const { account } = sessionOf(req);
    const drafts = await folderPath(account, '\\Drafts', 'Drafts');
    await pool.run(account, (c) => dropDraft(c, drafts, uid));
    return { uid, deleted: true };
  });

  /**
   * Sends through the msa, files a copy in Sent, drops the draft, marks the original
   * answered: all of it within SEND_TIMEOUT, so that a step that hangs (Redis, the msa,
   * the broker behind it, the store) never holds the request.
   *
   * The answer at the deadline depends on one fact: whether the msa confirmed the message
   * (its 250, given only once the broker has it). Confirmed, the message has left, and the
   * answer is 200 "sent" with a warning for the bookkeeping still under way: an error would
   * make the user send it a second time. Not confirmed, the answer is 503 and the work stops
   * where it is: a submission not begun is never begun (it would send a message the user
   * was told failed), one under way is abandoned (its connection closed). As for any SMTP
   * client whose connection ends after the final dot and before the reply (RFC 1047), the
   * msa may have queued it all the same: sent again, it may arrive twice, never not at all.
   */
  app.post('/api/send', async (req) => {
    const d = parse(draftSchema, req.body);
    const { account } = sessionOf(req);
    const late = new AbortController();
    /** Set once the msa confirmed the message: from then on the answer is "sent". */
    let sent: { messageId: string; warnings: string[] } | null = null;
    /** Recipients past the msa's limit whose further transaction is still under way. */
    let pending: string[] = [];
    const send = async () => {
      const m = await outgoing(account, d, true);
      const messageId = newMessageId(m.from.address);
      const raw = await buildMessage(m, { messageId, date: new Date(ctx.now()) });
      // an address in To and Cc, or written in another case, is one recipient: one RCPT,
      // one refusal, one place in the msa's recipient and error limits
      const rcpts: string[] = [];
      const seen = new Set<string>();
      for (const { address } of [...m.to, ...m.cc, ...m.bcc]) {
        if (seen.has(address.toLowerCase())) continue;
        seen.add(address.toLowerCase());
        rcpts.push(address);
      }
      // the user was answered 503 while the message was being prepared
      if (late.signal.aborted) throw errors.sendTimeout();
      let refused: { address: string; reply: string }[];
      try {
        ({ refused } = await submit(ctx.submit, account, { from: m.from.address, to: rcpts }, raw, {
          signal: late.signal,
          logger,
          // recipients past the msa's limit go in further transactions: the message has
          // left with the first, and an answer at the deadline must say so, and name those
          // it is still going to
          onProgress: (still) => {
            sent ??= { messageId, warnings: [] };
            pending = still;
          },
        }));
      } catch (err) {
        metrics.sent.inc({
          result: (err as { code?: string }).code === 'send_refused' ? 'refused' : 'failed',
        });
        throw err;
      }
      metrics.sent.inc({ result: 'ok' });
      // as a desktop client says it: the message went to the others, not to these
      const warnings = refused.map((r) => `Not sent to ${r.address}: ${r.reply}`);
      sent = { messageId, warnings };
      logger.info({ account, messageId, recipients: rcpts.length }, 'webmail sent a message');
      // the message has left: what follows is bookkeeping, and its failure must not say otherwise
      await releaseUploads(account, d, 'a sent message');
      if (refused.length)
        logger.info(
          { account, messageId, refused: refused.length },
          'some recipients refused by the mail server',
        );
      await (async () => {
        const sentFolder = await folderPath(account, '\\Sent', 'Sent');
        const drafts = await folderPath(account, '\\Drafts', 'Drafts');
        await pool.run(account, async (c) => {
          await c.append(sentFolder, raw, ['\\Seen']);
          if (d.draftUid) await dropDraft(c, drafts, d.draftUid);
          // the copy is filed: an original whose folder is gone (or a store failing now)
          // leaves the original unmarked, and is no failure to file the copy
          if (d.origin)
            await markOrigin(c, account, messageId, d.origin).catch((err: unknown) =>
              logger.warn({ account, messageId, err }, 'sent and filed, but its original not marked'),
            );
        });
      })().catch((err: Error) => {
        logger.warn({ account, messageId, err }, 'sent, but not filed in Sent');
        warnings.push('Sent, but the copy could not be saved in Sent');
      });
      return { messageId, sent: true, warnings };
    };
    const work = send();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<null>(
      (resolve) => (timer = setTimeout(() => resolve(null), ctx.config.send_timeout)),
    );
    try {
      const answer = await Promise.race([work, deadline]);
      if (answer) return answer;
    } finally {
      clearTimeout(timer);
    }
    late.abort();
    // what is left of the work ends by itself (each step has a deadline of its own)
    work.catch(() => undefined);
    const confirmed = sent as { messageId: string; warnings: string[] } | null;
    if (confirmed) {
      logger.warn(
        { account, messageId: confirmed.messageId, pending: pending.length },
        'sent, but the copy in Sent was not filed in time',
      );
      return {
        messageId: confirmed.messageId,
        sent: true,
        warnings: [
          ...confirmed.warnings,
          ...pending.map((address) => `Still being sent to ${address}: the mail server takes it in parts`),
          'Sent, but the copy in Sent may be missing: saving it took too long',
        ],
      };
    }
    logger.warn({ account, timeoutMs: ctx.config.send_timeout }, 'sending took longer than SEND_TIMEOUT');
    throw errors.sendTimeout();
  });
}
