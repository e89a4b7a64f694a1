// Folders the user makes, renames and deletes, through the account's own IMAP session
// (CREATE, RENAME, DELETE: RFC 9051 §6.3.4-6.3.6), as Roundcube or a desktop client does.
// The store's refusals keep their meaning: a name taken is 409 folder_exists, a folder
// another client removed meanwhile 404 no_such_folder, a store that cannot answer 503.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { FolderChange, FolderInfo } from './api-types.js';
import { folderSchema, parse, sessionOf, type Ctx } from './context.js';
import { errors, UpstreamError } from './errors.js';

/** Longest name of one level; the store bounds the whole path too (and says so, 409). */
export const MAX_FOLDER_NAME = 100;

/**
 * The name of one level, as typed: trimmed, not empty, no control characters, no LIST
 * wildcards (the store refuses them in names, RFC 9051 §6.3.4) and not "." or "..". The
 * hierarchy delimiter is checked against the store's once it is known (`withinLevel`).
 */
const levelName = z
  .string({ message: 'expected a folder name' })
  .transform((v) => v.trim())
  .pipe(
    z
      .string()
      .min(1, 'a folder needs a name')
      .max(MAX_FOLDER_NAME, `a folder name has at most ${MAX_FOLDER_NAME} characters`)
      .refine((v) => !/[\u0000-\u001f\u007f]/.test(v), 'a folder name cannot contain control characters')
      .refine((v) => !/[%*]/.test(v), 'a folder name cannot contain % or *')
      .refine((v) => v !== '.' && v !== '..', 'a folder cannot be named . or ..'),
  );

/** Folders the webmail files mail into (and INBOX): never renamed or deleted from here. */
export function isSpecialFolder(f: Pick<FolderInfo, 'path' | 'specialUse'>): boolean {
  return f.specialUse !== null || f.path.toUpperCase() === 'INBOX';
}

const labelOf = (f: FolderInfo) => (f.path.toUpperCase() === 'INBOX' ? 'Inbox' : f.name);

/** The store's hierarchy delimiter, as LIST gives it ("/" for ours and Dovecot's usual setup). */
const delimiterOf = (folders: FolderInfo[]) => folders.find((f) => f.delimiter)?.delimiter ?? '/';

function withinLevel(name: string, delimiter: string): string {
  if (name.includes(delimiter))
    throw errors.badRequest(
      `a folder name cannot contain "${delimiter}": it separates a folder from the one it is in`,
    );
  return name;
}

/** A folder (or a level above folders) of the account's list: anything else is 404. */
function existing(folders: FolderInfo[], path: string): FolderInfo {
  const f = folders.find((x) => x.path === path);
  if (!f) throw errors.noSuchFolder();
  return f;
}

/** The folder and those under it, deepest first (the order they are deleted in). */
function withChildren(folders: FolderInfo[], f: FolderInfo): FolderInfo[] {
  const prefix = f.path + f.delimiter;
  return [...folders.filter((x) => f.delimiter && x.path.startsWith(prefix)), f].sort(
    (a, b) => b.path.length - a.path.length,
  );
}

/**
 * The folder and those under it, refused (400 special_folder) when any is Inbox or a
 * special-use folder: renamed or deleted with its parent, the webmail and every client
 * would no longer find the folder they file mail into.
 */
export function noneSpecial(folders: FolderInfo[], f: FolderInfo): FolderInfo[] {
  if (isSpecialFolder(f)) throw errors.specialFolder(labelOf(f));
  const tree = withChildren(folders, f);
  const special = tree.find(isSpecialFolder);
  if (special) throw errors.specialFolder(labelOf(special));
  return tree;
}

/** The store's NO [NONEXISTENT]: the folder is not there (RFC 5530 §3). */
const goneMeanwhile = (err: unknown) =>
  (err as { serverResponseCode?: string })?.serverResponseCode?.toUpperCase() === 'NONEXISTENT';

/** imapflow answers nothing (rather than an error) when the session is no longer logged in. */
function done<T>(result: T | undefined): T {
  if (result === undefined) throw new UpstreamError('IMAP session not logged in');
  return result;
}

export function registerFolderRoutes(app: FastifyInstance, ctx: Ctx): void {
  /** A new folder at the top, or inside `parent`; subscribed, as imapflow does after CREATE. */
  app.post('/api/folders', async (req): Promise<FolderChange> => {
    const b = parse(z.object({ name: levelName, parent: folderSchema.optional() }), req.body);
    const { account } = sessionOf(req);
    const folders = await ctx.folders(account);
    const delimiter = delimiterOf(folders);
    const name = withinLevel(b.name, delimiter);
    const parent = b.parent ? existing(folders, b.parent) : null;
    // the folder list offers only the user's own folders to hold others: mail clients file
    // mail into Inbox and the special-use folders, and list what is under them apart
    if (parent && isSpecialFolder(parent)) throw errors.specialParent(labelOf(parent));
    const path = parent ? parent.path + delimiter + name : name;
    const res = done(await ctx.pool.run(account, (c) => c.mailboxCreate(path)));
    // imapflow answers ALREADYEXISTS as created: false
    if (!res.created) throw errors.folderExists();
    return { path: res.path };
  });

  /** A new name for a folder, at the same level; the folders under it move with it. */
  app.post('/api/folders/rename', async (req): Promise<FolderChange> => {
    const b = parse(z.object({ folder: folderSchema, name: levelName }), req.body);
    const { account } = sessionOf(req);
    const folders = await ctx.folders(account);
    const f = existing(folders, b.folder);
    noneSpecial(folders, f);
    const delimiter = f.delimiter || delimiterOf(folders);
    const name = withinLevel(b.name, delimiter);
    const path = f.parent ? f.parent + delimiter + name : name;
    if (path === f.path) return { path, from: f.path };
    done(await ctx.pool.run(account, (c) => c.mailboxRename(f.path, path)));
    return { path, from: f.path };
  });

  /**
   * Deletes a folder with its messages and the folders under it (as Roundcube does; the
   * store would otherwise leave them under a level that holds nothing), deepest first.
   * Their subscriptions go too: no client is left listing a folder that is not there.
   */
  app.post('/api/folders/delete', async (req): Promise<FolderChange> => {
    const b = parse(z.object({ folder: folderSchema }), req.body);
    const { account } = sessionOf(req);
    const folders = await ctx.folders(account);
    const f = existing(folders, b.folder);
    const gone = noneSpecial(folders, f);
    await ctx.pool.run(account, async (c) => {
      for (const x of gone) {
        // a level that holds nothing (\Noselect) goes with the last folder under it
        if (x.selectable)
          try {
            done(await c.mailboxDelete(x.path));
          } catch (err) {
            // a folder under it another client removed meanwhile is as good as deleted;
            // only the folder named missing is 404 (the last, the deepest go first)
            if (x === f || !goneMeanwhile(err)) throw err;
          }
        await c.mailboxUnsubscribe(x.path);
      }
    });
    return { deleted: gone.map((x) => x.path) };
  });
}
