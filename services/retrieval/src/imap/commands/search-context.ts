// CONTEXT=SEARCH (RFC 5267 §4): `SEARCH RETURN (UPDATE ...)` keeps the search open while
// the mailbox stays selected; as messages arrive, change flags or are expunged (by this
// session, another one, or delivery), the session tells the client how the result
// changed with `* ESEARCH (TAG "t") [UID] REMOVEFROM (0 uids) ADDTO (0 uids)`, before the
// other untagged updates, as Dovecot does. CANCELUPDATE closes a context.
import { formatSequence, ParseError, type ArgReader, type SearchKey } from '@mailyard/imap-core';
import type { SelectedContext } from '../context.js';
import type { MessageCache } from '../../message-cache.js';
import { ImapReply } from '../replies.js';
import { SearchEvaluator } from '../search.js';
import type { SelectedMailbox } from '../selected.js';
import { SELECTED, command, type CommandGroup } from './command.js';

/** Update contexts one session may hold open: each is searched again after every change. */
export const MAX_UPDATE_CONTEXTS = 10;

interface UpdateContext {
  tag: string;
  byUid: boolean;
  key: SearchKey;
  /** The UIDs the client was last told match. */
  uids: Set<number>;
}

/** By view: a new SELECT (or UNSELECT, CLOSE) ends every context of the previous one. */
const open = new WeakMap<SelectedMailbox, Map<string, UpdateContext>>();

/**
 * What the view looked like when its contexts were last searched: any change to the
 * folder adds a message, replaces the UID list (an expunge) or raises the modseq (a flag).
 */
const seen = new WeakMap<SelectedMailbox, { uids: readonly number[]; count: number; modseq: number }>();

/**
 * Keeps the result of a SEARCH RETURN (UPDATE) up to date from now on. False when the
 * session holds as many as it may (the search is answered, without updates).
 */
export function openContext(
  view: SelectedMailbox,
  tag: string,
  byUid: boolean,
  key: SearchKey,
  uids: number[],
): boolean {
  let map = open.get(view);
  if (!map) open.set(view, (map = new Map()));
  if (!map.has(tag) && map.size >= MAX_UPDATE_CONTEXTS) return false;
  map.set(tag, { tag, byUid, key, uids: new Set(uids) });
  seen.set(view, { uids: view.uids, count: view.uids.length, modseq: view.highestModseq });
  return true;
}

/**
 * The ESEARCH lines for every open context whose result changed since the client was last
 * told; run when the view has been brought up to date, so a message expunged but not yet
 * announced still counts as there. `before` is the view's UID list as it was before the
 * update: a SEARCH by sequence number is told in the numbers the client holds when it
 * reads these lines, which come before the EXISTS and EXPUNGE of the same update (as
 * Dovecot numbers them): every message it knew, and the new ones after them.
 */
export async function contextUpdates(
  view: SelectedMailbox,
  cache: MessageCache,
  before: readonly number[],
): Promise<string[]> {
  const map = open.get(view);
  if (!map?.size) return [];
  // nothing changed since the last search: every command ends here, so this stays cheap
  const last = seen.get(view);
  if (last?.uids === view.uids && last.count === view.uids.length && last.modseq === view.highestModseq)
    return [];
  seen.set(view, { uids: view.uids, count: view.uids.length, modseq: view.highestModseq });
  const lines: string[] = [];
  const ev = new SearchEvaluator(view, view.folder, cache);
  let numbering: Map<number, number> | null = null;
  for (const c of map.values()) {
    const now = new Set<number>();
    for (let i = 0; i < view.uids.length; i++) {
      const m = view.info(view.uids[i]!);
      if (m && (await ev.matches(c.key, i + 1, m))) now.add(m.uid);
    }
    const removed = [...c.uids].filter((u) => !now.has(u));
    const added = [...now].filter((u) => !c.uids.has(u));
    if (!removed.length && !added.length) continue;
    c.uids = now;
    let show = (uids: number[]) => formatSequence(uids);
    if (!c.byUid) {
      numbering ??= new Map(
        [...new Set([...before, ...view.uids])].sort((a, b) => a - b).map((u, i) => [u, i + 1]),
      );
      const seqs = numbering;
      show = (uids) => formatSequence(uids.map((u) => seqs.get(u)!));
    }
    let line = `* ESEARCH (TAG "${c.tag}")${c.byUid ? ' UID' : ''}`;
    // SEARCH results are in UID order: the position is 0 (RFC 5267 §4.3)
    if (removed.length) line += ` REMOVEFROM (0 ${show(removed)})`;
    if (added.length) line += ` ADDTO (0 ${show(added)})`;
    lines.push(line);
  }
  return lines;
}

/** `CANCELUPDATE "tag" *(SP "tag")` (RFC 5267 §4.2). */
function parseCancel(r: ArgReader): string[] {
  const tags: string[] = [];
  while (r.remaining) tags.push(r.astring('tag'));
  if (!tags.length) throw new ParseError('CANCELUPDATE needs a tag');
  return tags;
}

async function runCancel(s: SelectedContext, tag: string, tags: string[]): Promise<void> {
  const map = open.get(s.selected);
  // as Dovecot: a tag with no context open is NO, and nothing is cancelled
  if (!tags.every((t) => map?.has(t))) throw new ImapReply('NO', null, 'No such update context');
  for (const t of tags) map!.delete(t);
  await s.ok(tag, 'CANCELUPDATE completed');
}

export const contextCommands: CommandGroup = {
  CANCELUPDATE: command({ states: SELECTED, parse: parseCancel, run: runCancel }),
};
