// NOTIFY (RFC 5465): the client names mailboxes (event groups of a filter and events) and
// hears of their changes without polling: new and expunged messages and flag changes of
// the selected mailbox as EXISTS, EXPUNGE and FETCH (with the attributes MessageNew asks
// for), those of other mailboxes as STATUS, created, deleted and renamed mailboxes and
// subscriptions as LIST. Responses leave between commands and in IDLE (§3). Changes come
// from the account's change events (ChangeNotifier: this process's sessions, other
// workers and instances, delivery), and are read back from the store, so an event seen
// twice (ours, then its echo from the bus) is told once.
import {
  ArgReader,
  ParseError,
  parseFetchItems,
  tokenText,
  type FetchItem,
  type Token,
} from '@mailyard/imap-core';
import { FolderError, FolderGoneError, type MailFolder, type MessageInfo } from '@mailyard/mailstore';
import type { FolderChange } from '../../notifier.js';
import type { AuthedContext, NotifyRetry, NotifyWatcher, SelectedContext } from '../context.js';
import { gatherFetch, planFetch, renderFetch } from '../fetch.js';
import { ImapReply } from '../replies.js';
import { ResponseBatch, ResponseCutError } from '../response-batch.js';
import { enableCondstoreAuthed } from './args.js';
import { AUTHED, command, type CommandGroup } from './command.js';
import { quoteName } from './folders.js';

/** Mailbox names one NOTIFY SET may list (`mailboxes`, `subtree`), all groups together. */
export const MAX_NOTIFY_MAILBOXES = 100;
/** Event groups one NOTIFY SET may hold. */
export const MAX_NOTIFY_GROUPS = 20;
/** How much of MessageNew's FETCH responses is gathered before it is written out. */
const FLUSH_BYTES = 64 * 1024;
/**
 * How long a change of a folder gone with a RENAME (the folder's late echo, a subscription
 * that went with it) waits for the rename's own event, which tells both: the events of one
 * change come within milliseconds. Past it the change is told as it reads (Watch.wakeAt).
 */
const RENAME_EVENT_WAIT_MS = 2000;
/** Mailboxes with changes not yet told; past it the client gets NOTIFICATIONOVERFLOW. */
export const MAX_PENDING = 1000;

const SUPPORTED = ['MessageNew', 'MessageExpunge', 'FlagChange', 'MailboxName', 'SubscriptionChange'];
// RFC 5465 §5.4 and §5.8, and RFC 5464's: need ANNOTATE or METADATA, which are not offered
const MESSAGE_EVENTS = ['MessageNew', 'MessageExpunge', 'FlagChange'];
const UNSUPPORTED = ['AnnotationChange', 'MailboxMetadataChange', 'ServerMetadataChange'];

type Filter =
  'selected' | 'selected-delayed' | 'inboxes' | 'personal' | 'subscribed' | 'subtree' | 'mailboxes';
const FILTERS: Filter[] = [
  'selected',
  'selected-delayed',
  'inboxes',
  'personal',
  'subscribed',
  'subtree',
  'mailboxes',
];

interface Group {
  filter: Filter;
  names: string[];
  events: Set<string>;
  /** MessageNew's fetch attributes (selected filters only). */
  fetch: FetchItem[] | null;
}

type NotifyArgs = { none: true } | { none: false; status: boolean; groups: Group[] };

const canonical = (e: string) =>
  [...SUPPORTED, ...UNSUPPORTED].find((x) => x.toLowerCase() === e.toLowerCase()) ?? null;

/** `one-or-more-mailbox`: a name or a list of them. */
function mailboxes(t: Token, utf8: boolean): string[] {
  const items = t.t === 'list' ? t.v : [t];
  if (!items.length) throw new ParseError('NOTIFY needs a mailbox name');
  return items.map((x) => new ArgReader([x], utf8).mailbox());
}

function parseGroup(t: Token, utf8: boolean): Group {
  if (t.t !== 'list') throw new ParseError('NOTIFY event group must be a list');
  const r = new ArgReader(t.v, utf8);
  const f = r.atom('filter').toLowerCase();
  const filter = FILTERS.find((x) => x === f);
  if (!filter) throw new ParseError(`unknown NOTIFY filter ${f.slice(0, 30)}`);
  const names = filter === 'subtree' || filter === 'mailboxes' ? mailboxes(r.next('mailbox'), utf8) : [];
  const ev = r.next('events');
  r.end();
  const events = new Set<string>();
  let fetch: FetchItem[] | null = null;
  if (ev.t === 'atom' && ev.v.toUpperCase() === 'NONE') return { filter, names, events, fetch };
  if (ev.t !== 'list' || !ev.v.length) throw new ParseError('NOTIFY events must be a list or NONE');
  for (let i = 0; i < ev.v.length; i++) {
    const name = canonical(tokenText(ev.v[i]!));
    if (!name) throw new ParseError(`unknown NOTIFY event ${tokenText(ev.v[i]!).slice(0, 30)}`);
    events.add(name);
    if (name === 'MessageNew' && ev.v[i + 1]?.t === 'list') {
      // RFC 5465 §5.1: fetch attributes only where a FETCH can be sent, the selected mailbox
      if (!filter.startsWith('selected')) throw new ParseError('MessageNew attributes only for selected');
      fetch = parseFetchItems(ev.v[++i]!);
    }
  }
  // §5: MessageNew and MessageExpunge go together, so the client can keep its numbering
  if (events.has('MessageNew') !== events.has('MessageExpunge'))
    throw new ParseError('MessageNew and MessageExpunge must be together');
  // a FETCH of flags names its message by number: for the selected mailbox, only along
  // with them (as Dovecot; elsewhere a flag change is a STATUS)
  if (filter.startsWith('selected') && events.has('FlagChange') && !events.has('MessageNew'))
    throw new ParseError('FlagChange needs MessageNew and MessageExpunge');
  return { filter, names, events, fetch };
}

function parseNotify(r: ArgReader): NotifyArgs {
  const verb = r.atom('NONE or SET').toUpperCase();
  if (verb === 'NONE') {
    r.end();
    return { none: true };
  }
  if (verb !== 'SET') throw new ParseError('NOTIFY needs SET or NONE');
  let status = false;
  const first = r.peek();
  if (first?.t === 'atom' && first.v.toUpperCase() === 'STATUS') {
    r.next();
    status = true;
  }
  const groups: Group[] = [];
  while (r.remaining) groups.push(parseGroup(r.next('event group'), r.utf8Names));
  if (!groups.length) throw new ParseError('NOTIFY SET needs an event group');
  if (groups.filter((g) => g.filter.startsWith('selected')).length > 1)
    throw new ParseError('one selected filter at most');
  for (const f of ['inboxes', 'personal', 'subscribed'] as const)
    if (groups.filter((g) => g.filter === f).length > 1) throw new ParseError(`${f} given twice`);
  return { none: false, status, groups };
}

/** A folder's counters as NOTIFY's STATUS responses show them. */
interface Counts {
  MESSAGES: number;
  UIDNEXT: number;
  UIDVALIDITY: number;
  UNSEEN: number;
  HIGHESTMODSEQ: number;
}
const COUNT_ITEMS = ['MESSAGES', 'UIDNEXT', 'UIDVALIDITY', 'UNSEEN', 'HIGHESTMODSEQ'] as const;

/** Failures that reading again does not mend: a change of such a folder is not tried again. */
const UNREADABLE_FOR_GOOD = new Set(['EACCES', 'EPERM', 'ENAMETOOLONG']);
/**
 * NOTIFY's events the store could not be read for are collected again after a second,
 * doubled up to 30 s: the client hears of them once the store reads again, not at the
 * next change, which may be hours away. A folder whose counters still fail after ten
 * tries in a row (some minutes) is given up.
 */
export const NOTIFY_RETRY: NotifyRetry = { firstMs: 1000, maxMs: 30_000, tries: 10 };

/**
 * The folder's counters; null when it is gone (deleted meanwhile) or a name the store
 * cannot hold: nothing to tell. A store that cannot be read now (EIO, a folder it may not
 * read) throws: the change is not lost but told once it reads again, unless it never
 * will (see UNREADABLE_FOR_GOOD, NOTIFY_RETRY).
 */
async function counts(s: AuthedContext, name: string): Promise<Counts | null> {
  let f: MailFolder;
  try {
    f = s.mailbox.folder(name);
  } catch (err) {
    if (err instanceof FolderError) return null;
    throw err;
  }
  try {
    if (!(await f.exists())) return null;
    const snap = await f.snapshot();
    return {
      MESSAGES: snap.messages.length,
      UIDNEXT: snap.uidNext,
      UIDVALIDITY: snap.validity,
      UNSEEN: snap.messages.filter((m) => !m.flags.includes('\\Seen')).length,
      HIGHESTMODSEQ: snap.highestModseq,
    };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (err instanceof FolderGoneError || code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw err;
  }
}

/** Counts for a baseline only (what later STATUS responses compare with): none when unreadable. */
function baseline(s: AuthedContext, name: string): Promise<Counts | null> {
  // without one, the folder's next change is told with all its counters: nothing is lost
  return counts(s, name).catch(() => null);
}

/** The registration of one session: its groups, what it last told, what waits to be told. */
export class Watch implements NotifyWatcher {
  readonly selected: { delayed: boolean; fetch: boolean } | null;
  private readonly selectedGroup: Group | null;
  private readonly others: Group[];
  private readonly flagChange: boolean;
  private folders = new Set<string>();
  private subs = new Set<string>();
  /** What the client was last told (or shown by SET STATUS) of each folder. */
  private told = new Map<string, Counts>();
  private dirty = new Set<string>();
  private listDirty = false;
  /** Names folder and subscription events named since the last LIST responses. */
  private pending = new Map<
    string,
    {
      folder: boolean;
      subscription: boolean;
      oldFolder?: string;
      /** When a change of a folder gone with a RENAME was first left for the rename's event. */
      waitingSince?: number;
    }
  >();
  /** Folders whose messages changed since the session last brought its selected view up to date. */
  private touched = new Set<string>();
  /** Folders whose counters could not be read, with how many times in a row. */
  private unreadTries = new Map<string, number>();

  /** `maxUnreadTries`: NotifyRetry.tries. */
  constructor(
    groups: Group[],
    private readonly maxUnreadTries = NOTIFY_RETRY.tries,
  ) {
    this.selectedGroup = groups.find((g) => g.filter.startsWith('selected')) ?? null;
    this.others = groups.filter((g) => !g.filter.startsWith('selected'));
    this.flagChange = groups.some((g) => g.events.has('FlagChange'));
    const sg = this.selectedGroup;
    this.selected =
      sg && sg.events.size ? { delayed: sg.filter === 'selected-delayed', fetch: !!sg.fetch?.length } : null;
  }

  /** The group whose filter takes this mailbox: the first that names it (RFC 5465 §6). */
  private groupOf(name: string, subscribed: boolean): Group | null {
    for (const g of this.others) {
      switch (g.filter) {
        case 'personal':
          return g;
        case 'inboxes':
          // the mailboxes delivery files into: INBOX (filters may file elsewhere, but only when told)
          if (name === 'INBOX') return g;
          break;
        case 'subscribed':
          if (subscribed) return g;
          break;
        case 'mailboxes':
          if (g.names.includes(name)) return g;
          break;
        case 'subtree':
          if (g.names.some((n) => name === n || name.startsWith(n + '/'))) return g;
          break;
        default:
          break;
      }
    }
    return null;
  }

  private statusItems(): (typeof COUNT_ITEMS)[number][] {
    // HIGHESTMODSEQ says a flag changed (RFC 7162 §3.1.2): when FlagChange was asked for
    // (for any mailbox, as Dovecot)
    return this.flagChange ? [...COUNT_ITEMS] : COUNT_ITEMS.filter((i) => i !== 'HIGHESTMODSEQ');
  }

  private statusLine(s: AuthedContext, name: string, items: string[], c: Counts): string {
    const vals = items.map((i) => `${i} ${c[i as keyof Counts]}`);
    return `* STATUS ${quoteName(s, name)} (${vals.join(' ')})`;
  }

  /** Reads the account's folders and subscriptions; with `status`, the STATUS of every watched mailbox. */
  async start(s: AuthedContext, status: boolean): Promise<string[]> {
    this.folders = new Set((await s.mailbox.list()).map((f) => f.name));
    this.subs = new Set(await s.mailbox.subscriptions());
    const lines: string[] = [];
    for (const name of this.folders) {
      if (name === s.selected?.name) continue;
      const g = this.groupOf(name, this.subs.has(name));
      // STATUS only where message events are asked for (a MailboxName group has none)
      if (!g || !MESSAGE_EVENTS.some((e) => g.events.has(e))) continue;
      const c = await baseline(s, name);
      if (!c) continue;
      this.told.set(name, c);
      if (status) lines.push(this.statusLine(s, name, this.statusItems(), c));
    }
    return lines;
  }

  record(folder: string, change: FolderChange): boolean {
    if (change.kind === 'messages') this.dirty.add(folder);
    else {
      this.listDirty = true;
      const p = this.pending.get(folder) ?? { folder: false, subscription: false };
      if (change.kind === 'folder') p.folder = true;
      else p.subscription = true;
      if (change.oldFolder !== undefined) p.oldFolder = change.oldFolder;
      this.pending.set(folder, p);
    }
    if (change.kind === 'messages') this.touched.add(folder);
    return this.dirty.size + this.pending.size <= MAX_PENDING;
  }

  takeSelected(name: string): boolean {
    const hit = this.touches(name);
    this.touched.clear();
    return hit;
  }

  waiting(selected: string | null): boolean {
    return this.listDirty || this.dirty.size > 0 || (selected !== null && this.touches(selected));
  }

  /** Whether a change of folder `name` is waiting; '' is IDLE's poll: any folder. */
  private touches(name: string): boolean {
    return this.touched.has(name) || this.touched.has('');
  }

  /** When the first change left for a RENAME's event is told whatever came (NotifyWatcher). */
  get wakeAt(): number | null {
    let since = Infinity;
    for (const p of this.pending.values())
      if (p.waitingSince !== undefined) since = Math.min(since, p.waitingSince);
    return since === Infinity ? null : since + RENAME_EVENT_WAIT_MS;
  }

  /** Why the last collect() left a folder's change waiting; null: it told all (NotifyWatcher). */
  unread: Error | null = null;

  async collect(s: AuthedContext): Promise<string[]> {
    this.unread = null;
    const lines: string[] = [];
    if (this.listDirty) {
      this.listDirty = false;
      lines.push(...(await this.listChanges(s)));
    }
    const dirty = [...this.dirty];
    this.dirty.clear();
    for (const name of dirty) {
      if (name === s.selected?.name || !this.folders.has(name)) continue;
      const g = this.groupOf(name, this.subs.has(name));
      if (!g) continue;
      let c: Counts | null;
      try {
        c = await counts(s, name);
      } catch (err) {
        const tries = (this.unreadTries.get(name) ?? 0) + 1;
        if (
          UNREADABLE_FOR_GOOD.has((err as NodeJS.ErrnoException).code ?? '') ||
          tries >= this.maxUnreadTries
        ) {
          // a folder that will not read however often it is tried: its change is dropped
          // rather than tried, and logged, every 30 s for the rest of the session
          this.unreadTries.delete(name);
          s.log.warn({ err, folder: name, tries }, 'NOTIFY gave up telling a folder it cannot read');
          continue;
        }
        // the store cannot read the folder now: its change waits for the next collection
        // (the session tries again), the other folders' are told
        this.unreadTries.set(name, tries);
        this.dirty.add(name);
        this.unread ??= err instanceof Error ? err : new Error(String(err));
        continue;
      }
      this.unreadTries.delete(name);
      if (!c) continue;
      const was = this.told.get(name);
      this.told.set(name, c);
      const items = this.statusItems().filter((i) => !was || was[i] !== c[i]);
      const messages = items.some((i) => i === 'MESSAGES' || i === 'UIDNEXT' || i === 'UIDVALIDITY');
      // RFC 5465 §5.1-5.3: new or expunged messages with MessageNew/MessageExpunge, the
      // unseen count and modseq alone with FlagChange
      const due = messages ? g.events.has('MessageNew') : g.events.has('FlagChange');
      if (items.length && due) lines.push(this.statusLine(s, name, items, c));
    }
    return lines;
  }

  /**
   * LIST responses for folders created, deleted and renamed, and subscriptions changed
   * (§5.4, §5.5). Each event is judged by the names it carries, against the store as it
   * is now: an event may arrive after later changes (from another worker), and the folder
   * list then already shows them; a name no event named yet is left for its own event.
   */
  private async listChanges(s: AuthedContext): Promise<string[]> {
    // events recorded while this one reads the store are for the next call: the store as
    // read here may not show them yet
    const pending = this.pending;
    this.pending = new Map();
    let folders: Set<string>;
    let subs: Set<string>;
    try {
      folders = new Set((await s.mailbox.list()).map((f) => f.name));
      subs = new Set(await s.mailbox.subscriptions());
    } catch (err) {
      // the store cannot be read now: the changes wait for the next refresh, with those
      // recorded meanwhile, rather than never being told
      for (const [name, later] of this.pending) {
        const p = pending.get(name);
        if (!p) pending.set(name, later);
        else {
          p.folder ||= later.folder;
          p.subscription ||= later.subscription;
          if (later.oldFolder !== undefined) p.oldFolder = later.oldFolder;
        }
      }
      this.pending = pending;
      this.listDirty = true;
      throw err;
    }
    const lines: string[] = [];
    const tell = (name: string, event: string) => {
      const g = this.groupOf(name, subs.has(name) || this.subs.has(name));
      return !!g?.events.has(event);
    };
    const known = async (name: string, exists: boolean) => {
      if (!exists) {
        this.folders.delete(name);
        this.told.delete(name);
        this.unreadTries.delete(name);
        return;
      }
      this.folders.add(name);
      // a folder new to the client is told as LIST only; STATUS compares with this from now on
      const c = await baseline(s, name);
      if (c) this.told.set(name, c);
    };
    // renames first: an event of the old name that arrives late (a subscription's echo
    // from the bus, before the rename's own event) then finds the name already gone from
    // what the client was told, not a subscription that went
    const renamesFirst = [...pending].sort(
      ([, a], [, b]) => Number(b.oldFolder !== undefined) - Number(a.oldFolder !== undefined),
    );
    // a folder in the store that the client was not told of and no event here names: made
    // by a change whose event has not come, a RENAME's among them
    const unnamed = [...folders].some((f) => !this.folders.has(f) && !pending.has(f));
    /** Leaves `name`'s entry for a later call, waiting since `p`'s first wait. */
    const waitForRename = (name: string, p: { waitingSince?: number }, kind: 'folder' | 'subscription') => {
      const later = this.pending.get(name) ?? { folder: false, subscription: false };
      later[kind] = true;
      later.waitingSince ??= p.waitingSince ?? Date.now();
      this.pending.set(name, later);
      this.listDirty = true;
    };
    for (const [name, p] of renamesFirst) {
      if (p.oldFolder !== undefined) {
        const from = p.oldFolder;
        // the folder and every level below it, each with its old name; RENAME takes the
        // subscriptions along, which is told as the rename
        for (const old of [...this.folders]) {
          if (old !== from && !old.startsWith(from + '/')) continue;
          const now = name + old.slice(from.length);
          if (!folders.has(now) || this.folders.has(now)) continue;
          if (folders.has(old)) {
            // the source is still there (RENAME INBOX moves the messages and leaves INBOX):
            // the new name is a folder created
            if (tell(now, 'MailboxName')) lines.push(`* LIST () "/" ${quoteName(s, now)}`);
            await known(now, true);
            continue;
          }
          if (tell(now, 'MailboxName') || tell(old, 'MailboxName'))
            lines.push(`* LIST () "/" ${quoteName(s, now)} ("OLDNAME" (${quoteName(s, old)}))`);
          await known(old, false);
          await known(now, true);
          if (!subs.has(old)) this.subs.delete(old);
          if (subs.has(now)) this.subs.add(now);
        }
      }
      // gone from the store while a folder no event named yet is there: a RENAME under
      // way, read between its move and its own event (which tells both as the rename) by
      // an event of the old name that came late, an echo from the bus of its CREATE.
      // Left for the rename's event, for a while; a DELETE is told at once
      if (
        p.folder &&
        unnamed &&
        this.folders.has(name) &&
        !folders.has(name) &&
        Date.now() - (p.waitingSince ?? Date.now()) < RENAME_EVENT_WAIT_MS
      ) {
        waitForRename(name, p, 'folder');
        if (p.subscription) waitForRename(name, p, 'subscription');
        continue;
      }
      // also after a rename: the entry may hold a later create or delete of the new name
      // (or a rename's echo from the bus, which then finds nothing left to tell)
      if (p.folder && this.folders.has(name) !== folders.has(name)) {
        if (tell(name, 'MailboxName'))
          lines.push(`* LIST (${folders.has(name) ? '' : '\\NonExistent'}) "/" ${quoteName(s, name)}`);
        await known(name, folders.has(name));
      }
      if (p.subscription && this.subs.has(name) !== subs.has(name)) {
        // gone with its folder, whose event has not come: a RENAME (which takes the
        // subscription along, told as the rename) that an echo of the subscription read
        // half done. Left for the rename's event, for a while: an UNSUBSCRIBE and a DELETE
        // are told once the DELETE's event came
        if (
          !subs.has(name) &&
          this.folders.has(name) &&
          !folders.has(name) &&
          Date.now() - (p.waitingSince ?? Date.now()) < RENAME_EVENT_WAIT_MS
        ) {
          waitForRename(name, p, 'subscription');
          continue;
        }
        if (tell(name, 'SubscriptionChange'))
          lines.push(`* LIST (${subs.has(name) ? '\\Subscribed' : ''}) "/" ${quoteName(s, name)}`);
        if (subs.has(name)) this.subs.add(name);
        else this.subs.delete(name);
      }
    }
    return lines;
  }

  /**
   * Sends the FETCH that MessageNew asks for, for each new message of the selected mailbox.
   * Written out every FLUSH_BYTES and after the client took it (a thousand new messages
   * with BODY[] are never held at once).
   */
  async fetchNew(s: SelectedContext, uids: number[]): Promise<void> {
    const items = this.selectedGroup?.fetch ?? [];
    const view = s.selected;
    const ctx = {
      folder: view.folder,
      cache: s.deps.cache,
      utf8: s.enabled.utf8,
      rev2: s.enabled.rev2,
      unsolicitedModseq: s.enabled.condstore,
      byUid: false,
      flags: (m: MessageInfo) => view.flags(m),
    };
    const plan = planFetch(items);
    const batch = new ResponseBatch();
    for (const uid of uids) {
      const m = view.info(uid);
      if (!m) continue;
      let body;
      try {
        const got = gatherFetch(ctx, plan, m);
        body = renderFetch(ctx, plan, m, items, got instanceof Promise ? await got : got);
      } catch {
        // expunged meanwhile, or a section it lacks: the EXISTS told of it, a FETCH will answer
        continue;
      }
      batch.push(`* ${view.seqOf(uid)} FETCH `);
      // sent as the batch fills, also within a message (see renderFetch)
      let begun = false;
      try {
        for (const p of body) {
          batch.push(p);
          if (batch.length >= FLUSH_BYTES) {
            await s.sendBatch(batch.take(), true);
            begun = true;
          }
        }
      } catch (err) {
        throw begun ? new ResponseCutError(err) : err;
      }
      batch.push('\r\n');
      if (batch.length >= FLUSH_BYTES) await s.sendBatch(batch.take());
    }
    if (batch.length) await s.sendBatch(batch.take());
  }
}

async function runNotify(s: AuthedContext, tag: string, a: NotifyArgs): Promise<void> {
  if (a.none) {
    s.setNotify(null);
    return s.ok(tag, 'NOTIFY completed');
  }
  const bad = a.groups.flatMap((g) => [...g.events].filter((e) => UNSUPPORTED.includes(e)));
  // RFC 5465 §8: BADEVENT lists the events the server does support
  if (bad.length)
    throw new ImapReply('NO', `BADEVENT (${SUPPORTED.join(' ')})`, `Not supported: ${bad.join(' ')}`);
  if (a.groups.length > MAX_NOTIFY_GROUPS)
    throw new ImapReply('NO', 'LIMIT', `NOTIFY takes at most ${MAX_NOTIFY_GROUPS} event groups`);
  if (a.groups.reduce((n, g) => n + g.names.length, 0) > MAX_NOTIFY_MAILBOXES)
    throw new ImapReply('NO', 'LIMIT', `NOTIFY names at most ${MAX_NOTIFY_MAILBOXES} mailboxes`);
  const watch = new Watch(a.groups, s.deps.notifyRetry.tries);
  // flag changes are told with their mod-sequences (HIGHESTMODSEQ): CONDSTORE is on, as
  // after any command that shows one (RFC 7162 §3.1), and as Dovecot does
  if (a.groups.some((g) => g.events.has('FlagChange'))) enableCondstoreAuthed(s);
  // watching from before the baseline is read: a change meanwhile is recorded, and told
  // after this command if the baseline missed it
  s.setNotify(watch);
  const lines = await watch.start(s, a.status);
  if (lines.length) s.send(lines.join('\r\n') + '\r\n');
  await s.ok(tag, 'NOTIFY completed');
}

export const notifyCommands: CommandGroup = {
  NOTIFY: command({ states: AUTHED, parse: parseNotify, run: runNotify }),
};
