// Folder access shared by the commands: names as the client writes them, store errors
// as IMAP response codes.
import { encodeMutf7, str } from '@mailyard/imap-core';
import { FolderError, type MailFolder } from '@mailyard/mailstore';
import type { AuthedContext, ImapContext } from '../context.js';
import { reply } from '../replies.js';

/** A folder name as the client reads it: UTF-8 once enabled, else modified UTF-7 (RFC 9051 §5.1.3). */
export function quoteName(s: ImapContext, name: string): string {
  return str(s.enabled.utf8 ? name : encodeMutf7(name), s.enabled.utf8).join('');
}

export function folderErr(err: unknown): never {
  if (err instanceof FolderError) {
    switch (err.code) {
      case 'exists':
        throw reply.alreadyExists();
      case 'nonexistent':
        throw reply.nonexistent();
      case 'inbox':
        throw reply.cannot(err.message);
      case 'invalid':
        throw reply.cannot(err.message);
      case 'limit':
        throw reply.limit(err.message);
    }
  }
  throw err;
}

/** A name a client wants to give a folder (CREATE, RENAME): no LIST wildcards in it. */
export function newFolderName(name: string): string {
  if (/[%*]/.test(name)) throw reply.wildcardName();
  return name;
}

/** The folder, which must exist: NO [NONEXISTENT], or [TRYCREATE] where a client may create it. */
export async function requireFolder(s: AuthedContext, name: string, tryCreate = false): Promise<MailFolder> {
  let f: MailFolder;
  try {
    f = s.mailbox.folder(name);
  } catch (err) {
    folderErr(err);
  }
  if (!(await f.exists())) throw tryCreate ? reply.tryCreate() : reply.nonexistent();
  return f;
}
