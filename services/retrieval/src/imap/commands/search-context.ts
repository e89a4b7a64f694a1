// CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4): `SEARCH RETURN (UPDATE ...)` and `SORT
// RETURN (UPDATE ...)` keep the result open while the mailbox stays selected; as messages
// arrive, change flags or are expunged (by this session, another one, or delivery), the
// session tells the client how the result changed with
// `* ESEARCH (TAG "t") [UID] REMOVEFROM (pos set ...) ADDTO (pos set ...)`, before the
// other untagged updates, as Dovecot does. CANCELUPDATE closes a context.
import {
  formatOrderedSequence,
  formatSequence,
  ParseError,
  type ArgReader,
  type SearchKey,
} from '@mailyard/imap-core';
import type { SelectedContext } from '../context.js';
import { MessageGoneError } from '@mailyard/mailstore';
import type { MessageCache } from '../../message-cache.js';
import { ImapReply } from '../replies.js';
import { SearchEvaluator } from '../search.js';
import type { SelectedMailbox } from '../selected.js';
import { sortedMatches, type SortCriterion } from '../sort.js';
import { SELECTED, command, type CommandGroup } from './command.js';

/** Update contexts one session may hold open, SEARCH and SORT together: each is searched again after every change. */
export const MAX_UPDATE_CONTEXTS = 10;

export interface ContextSpec {
  tag: string;
  byUid: boolean;
  key: SearchKey;
  /** SORT's criteria; null for a SEARCH, whose result is in UID order. */
  sort: SortCriterion[] | null;
  /** PARTIAL's range (RFC 5267 §4.4): a SORT context keeps only that window of the result current. */
  partial: [number, number] | null;
  /** The whole result as the client was told it, in its order (UIDs). */
  uids: number[];
}

interface UpdateContext extends ContextSpec {
  /** A SEARCH context's result as a set. */
  members: Set<number>;
}

/** By view: a new SELECT (or UNSELECT, CLOSE) ends every context of the previous one. */
const open = new WeakMap<SelectedMailbox, Map<string, UpdateContext>>();

/**
 * What the view looked like when its contexts were last searched: any change to the
 * folder adds a message, replaces the UID list (an expunge) or raises the modseq (a flag).
 */
const seen = new WeakMap<SelectedMailbox, { uids: readonly number[]; count: number; modseq: number }>();

/**
 * Keeps the result of a SEARCH or SORT RETURN (UPDATE) up to date from now on. False when
 * the session holds as many as it may (the command is answered, without updates).
 */
export function openContext(view: SelectedMailbox, spec: ContextSpec): boolean {
  let map = open.get(view);
  if (!map) open.set(view, (map = new Map()));
  if (!map.has(spec.tag) && map.size >= MAX_UPDATE_CONTEXTS) return false;
  map.set(spec.tag, { ...spec, members: new Set(spec.uids) });
  seen.set(view, { uids: view.uids, count: view.uids.length, modseq: view.highestModseq });
  return true;
}

/** A run of messages next to each other in a result: where it starts (1-based) and what it holds. */
interface Run {
  pos: number;
  uids: number[];
}

/**
 * How the ordered list `was` becomes `now` when the messages both hold keep their order
 * (a SORT key never changes): the removals and additions as runs of neighbours. A client
 * applies each pair in turn to the list as the ones before it left it (RFC 5267 §4.3):
 * the removals from the front, each at its position once the earlier runs are gone, then
 * the additions from the front, each at the position it has in `now`.
 */
export function listChanges(
  was: readonly number[],
  now: readonly number[],
): { removed: Run[]; added: Run[] } {
  const keep = new Set(now);
  const had = new Set(was);
  const removed: Run[] = [];
  let gone = 0;
  for (let i = 0; i < was.length; i++) {
    if (keep.has(was[i]!)) continue;
    const last = removed[removed.length - 1];
    // the previous entry removed too: the same run
    if (last && i > 0 && !keep.has(was[i - 1]!)) last.uids.push(was[i]!);
    else removed.push({ pos: i + 1 - gone, uids: [was[i]!] });
    gone++;
  }
  const added: Run[] = [];
  for (let i = 0; i < now.length; i++) {
    if (had.has(now[i]!)) continue;
    const last = added[added.length - 1];
    if (last && i > 0 && !had.has(now[i - 1]!)) last.uids.push(now[i]!);
    else added.push({ pos: i + 1, uids: [now[i]!] });
  }
  return { removed, added };
}

/** The window of a result PARTIAL asked for: positions from..to (1-based), as far as the result goes. */
function window(uids: readonly number[], partial: [number, number] | null): number[] {
  return partial ? uids.slice(partial[0] - 1, partial[1]) : [...uids];
}

/**
 * The ESEARCH lines for every open context whose result changed since the client was last
 * told; run when the view has been brought up to date, so a message expunged but not yet
 * announced still counts as there. `before` is the view's UID list as it was before the
 * update: a SEARCH or SORT by sequence number is told in the numbers the client holds
 * when it reads these lines, which come before the EXISTS and EXPUNGE of the same update
 * (as Dovecot numbers them): every message it knew, and the new ones after them.
 */
export async function contextUpdates(
  view: SelectedMailbox,
  cache: MessageCache,
  before: readonly number[],
): Promise<string[]> {
  try {
    return await computeUpdates(view, cache, before);
  } catch (err) {
    // a message another session expunged, not yet announced here, can no longer be read:
    // the command that ends here succeeded all the same, and the updates go with the
    // next one, once the expunge is told
    if (err instanceof MessageGoneError || (err as NodeJS.ErrnoException).code === 'ENOENT') {
      seen.delete(view);
      return [];
    }
    throw err;
  }
}

async function computeUpdates(
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
  const number = (c: UpdateContext): ((uids: number[]) => number[]) => {
    if (c.byUid) return (uids) => uids;
    numbering ??= new Map(
      [...new Set([...before, ...view.uids])].sort((a, b) => a - b).map((u, i) => [u, i + 1]),
    );
    const seqs = numbering;
    return (uids) => uids.map((u) => seqs.get(u)!);
  };
  // every context's new result is worked out before any is kept: a read that fails part
  // way (see contextUpdates) leaves them all as the client knows them
  const commits: (() => void)[] = [];
  for (const c of map.values()) {
    let line = `* ESEARCH (TAG "${c.tag}")${c.byUid ? ' UID' : ''}`;
    const show = number(c);
    if (!c.sort) {
      const now: number[] = [];
      for (let i = 0; i < view.uids.length; i++) {
        const m = view.info(view.uids[i]!);
        if (m && (await ev.matches(c.key, i + 1, m))) now.push(m.uid);
      }
      const nowSet = new Set(now);
      const removed = c.uids.filter((u) => !nowSet.has(u));
      const added = now.filter((u) => !c.members.has(u));
      if (!removed.length && !added.length) continue;
      commits.push(() => {
        c.uids = now;
        c.members = nowSet;
      });
      // SEARCH results are in UID order: the position is 0 (RFC 5267 §4.3)
      if (removed.length) line += ` REMOVEFROM (0 ${formatSequence(show(removed))})`;
      if (added.length) line += ` ADDTO (0 ${formatSequence(show(added))})`;
    } else {
      const now = (await sortedMatches(view, cache, c.key, c.sort)).map((r) => r.uid);
      const { removed, added } = listChanges(window(c.uids, c.partial), window(now, c.partial));
      commits.push(() => (c.uids = now));
      if (!removed.length && !added.length) continue;
      // SORT results keep their own order: each run at its position in the result (with
      // PARTIAL, in the whole result, the window starting at its first position)
      const offset = c.partial ? c.partial[0] - 1 : 0;
      const runs = (rs: Run[]) => rs.map((r) => `${r.pos + offset} ${formatOrderedSequence(show(r.uids))}`);
      if (removed.length) line += ` REMOVEFROM (${runs(removed).join(' ')})`;
      if (added.length) line += ` ADDTO (${runs(added).join(' ')})`;
    }
    lines.push(line);
  }
  for (const commit of commits) commit();
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
