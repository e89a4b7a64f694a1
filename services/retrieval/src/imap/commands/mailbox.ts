// Commands on folders as a whole (RFC 9051 §6.3): selecting one, creating, deleting,
// renaming, subscribing, LIST (with LIST-EXTENDED, SPECIAL-USE, LIST-STATUS) and STATUS.
import {
  ArgReader,
  MailboxNameError,
  ParseError,
  str,
  tokenText,
  type SequenceSet,
  type Token,
} from '@mailyard/imap-core';
import type { AuthedContext } from '../context.js';
import { reply } from '../replies.js';
import { SelectedMailbox } from '../selected.js';
import { enableCondstoreAuthed, oneMailbox } from './args.js';
import { AUTHED, command, type CommandGroup } from './command.js';
import { folderErr, newFolderName, quoteName, requireFolder } from './folders.js';

// --- STATUS -----------------------------------------------------------------------

const STATUS_ITEMS = [
  'MESSAGES',
  'UIDNEXT',
  'UIDVALIDITY',
  'UNSEEN',
  'DELETED',
  'SIZE',
  'RECENT',
  'HIGHESTMODSEQ',
];

/** `written`: the name as the command spelled it, which the answer repeats; else the folder's own. */
async function statusLine(
  s: AuthedContext,
  name: string,
  items: string[],
  written?: string,
): Promise<string> {
  const f = await requireFolder(s, name);
  const snap = await f.snapshot();
  // RFC 8438: at least the sum of the messages' RFC822.SIZE; Dovecot answers that sum
  const size = items.includes('SIZE')
    ? (await s.deps.cache.sentSizes(f, snap.messages)).reduce((a, n) => a + Math.max(n, 0), 0)
    : 0;
  const vals = items.map((it) => {
    switch (it) {
      case 'MESSAGES':
        return `MESSAGES ${snap.messages.length}`;
      case 'UIDNEXT':
        return `UIDNEXT ${snap.uidNext}`;
      case 'UIDVALIDITY':
        return `UIDVALIDITY ${snap.validity}`;
      case 'UNSEEN':
        return `UNSEEN ${snap.messages.filter((m) => !m.flags.includes('\\Seen')).length}`;
      case 'DELETED':
        return `DELETED ${snap.messages.filter((m) => m.flags.includes('\\Deleted')).length}`;
      case 'SIZE':
        return `SIZE ${size}`;
      case 'RECENT': {
        // RFC 3501 §6.3.10: messages with \Recent set, which is per session (§2.3.2): in
        // the mailbox this session has selected, those it holds as well as those nobody
        // has claimed yet (its next update claims them)
        const mark = f.recentMark();
        const held = s.selected?.name === name ? s.selected.recent : new Set<number>();
        return `RECENT ${snap.messages.filter((m) => m.uid >= mark || held.has(m.uid)).length}`;
      }
      default:
        return `HIGHESTMODSEQ ${snap.highestModseq}`;
    }
  });
  const shown = written === undefined ? quoteName(s, name) : str(written, s.enabled.utf8).join('');
  return `* STATUS ${shown} (${vals.join(' ')})`;
}

function statusItems(list: Token[]): string[] {
  const items = list.map((t) => tokenText(t).toUpperCase());
  if (!items.length || items.some((i) => !STATUS_ITEMS.includes(i))) throw new ParseError('bad STATUS item');
  return items;
}

// --- LIST ---------------------------------------------------------------------------

interface ListArgs {
  select: Set<string>;
  ref: string;
  patterns: string[];
  ret: Set<string>;
  status: string[] | null;
  lsub: boolean;
  /** Selection options, RETURN or a list of patterns were given (RFC 5258's extended LIST). */
  extended: boolean;
}

// RFC 5258 §3.1 (and RFC 6154 §5.1): selection options; an unknown one is BAD (§3)
const SELECTION_OPTIONS = ['SUBSCRIBED', 'REMOTE', 'RECURSIVEMATCH', 'SPECIAL-USE'];
// RFC 5258 §3.2, RFC 6154 §5.2, RFC 5819 (STATUS, read apart)
const RETURN_OPTIONS = ['SUBSCRIBED', 'CHILDREN', 'SPECIAL-USE'];

function patternRegex(p: string): RegExp {
  const re = p
    .replace(/[.+?^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/%/g, '[^/]*');
  // INBOX matches case-insensitively
  return new RegExp(`^${re}$`, /^inbox/i.test(p) ? 'i' : '');
}

function parseList(r: ArgReader, lsub: boolean): ListArgs {
  const select = new Set<string>();
  let extended = false;
  if (!lsub) {
    const sel = r.optionalList();
    extended = sel !== null;
    for (const t of sel ?? []) {
      const o = tokenText(t).toUpperCase();
      if (!SELECTION_OPTIONS.includes(o))
        throw new ParseError(`unknown LIST selection option ${o.slice(0, 30)}`);
      select.add(o);
    }
    // RFC 5258 §3.1: RECURSIVEMATCH only qualifies another selection option
    if (select.has('RECURSIVEMATCH') && ![...select].some((o) => o !== 'RECURSIVEMATCH' && o !== 'REMOTE'))
      throw new ParseError('RECURSIVEMATCH needs another selection option');
  }
  const ref = r.astring('reference');
  const pt = r.next('mailbox pattern');
  // RFC 5258 §3: several patterns in parentheses make a LIST extended too
  if (pt.t === 'list' && !lsub) extended = true;
  // NIL is a pattern as any atom is (RFC 9051 §9 list-mailbox: 1*list-char / string)
  const rawPatterns = pt.t === 'list' ? pt.v.map(tokenText) : [tokenText(pt)];
  const patterns = rawPatterns.map((p) => (r.utf8Names ? p : decodeName(p)));
  const ret = new Set<string>();
  let status: string[] | null = null;
  if (r.remaining && !lsub) {
    if (r.atom('RETURN').toUpperCase() !== 'RETURN') throw new ParseError('expected RETURN');
    extended = true;
    const opts = r.list('return options');
    for (let i = 0; i < opts.length; i++) {
      const o = tokenText(opts[i]!).toUpperCase();
      if (o === 'STATUS') {
        const next = opts[++i];
        if (next?.t !== 'list') throw new ParseError('STATUS needs a list');
        status = statusItems(next.v);
      } else if (RETURN_OPTIONS.includes(o)) ret.add(o);
      else throw new ParseError(`unknown LIST return option ${o.slice(0, 30)}`);
    }
  }
  r.end();
  if (select.has('SUBSCRIBED')) ret.add('SUBSCRIBED');
  return { select, ref, patterns, ret, status, lsub, extended };
}

function decodeName(p: string): string {
  try {
    return new ArgReader([{ t: 'atom', v: p }], false).mailbox();
  } catch {
    return p;
  }
}

/** The name and every level above it: `a/b/c` → `a`, `a/b`, `a/b/c`. */
function withParents(name: string): string[] {
  const parts = name.split('/');
  return parts.map((_p, i) => parts.slice(0, i + 1).join('/'));
}

/**
 * LIST and LSUB (RFC 9051 §6.3.9, RFC 5258, RFC 3501 §6.3.9). The names listed are the
 * folders, the levels above them that are no folder (Maildir++ creates `a/b` without
 * `a`), and, when subscriptions are asked for, the subscribed names, which may no longer
 * exist (DELETE keeps the subscription, RFC 3501 §6.3.9). A name that is no folder is
 * `\NonExistent` in the extended syntax and `\Noselect` otherwise (as Dovecot answers).
 */
async function runList(s: AuthedContext, tag: string, a: ListArgs): Promise<void> {
  const cmd = a.lsub ? 'LSUB' : 'LIST';
  if (a.patterns.length === 1 && a.patterns[0] === '' && !a.lsub) {
    s.send(`* LIST (\\Noselect) "/" ""\r\n`);
    return s.ok(tag, 'LIST completed');
  }
  const folders = await s.mailbox.list();
  const onlySubscribed = a.lsub || a.select.has('SUBSCRIBED');
  // read only for an answer that shows them: a list the store cannot read fails LSUB, not every LIST
  const subList = onlySubscribed || a.ret.has('SUBSCRIBED') ? await s.mailbox.subscriptions() : [];
  const subs = new Set(subList);
  const existing = new Map(folders.map((f) => [f.name, f]));
  const onlySpecial = a.select.has('SPECIAL-USE');
  const recursive = a.select.has('RECURSIVEMATCH');
  const names = new Set<string>();
  for (const f of folders) for (const n of withParents(f.name)) names.add(n);
  if (onlySubscribed) for (const n of subList) for (const p of withParents(n)) names.add(p);
  const all = [...names];
  const regs = a.patterns.map((p) => patternRegex(a.ref + p));
  const matches = (n: string) => regs.some((re) => re.test(n));
  // RFC 3501 §6.3.9: LSUB shows an unsubscribed level above a subscribed name when a
  // pattern ending in "%" stops at it
  const percentRegs = a.patterns.filter((p) => p.endsWith('%')).map((p) => patternRegex(a.ref + p));
  const selected = (n: string): boolean =>
    onlySubscribed ? subs.has(n) : onlySpecial ? !!existing.get(n)?.specialUse : true;
  const lines: string[] = [];
  for (const name of all) {
    if (!matches(name)) continue;
    const under = all.filter((n) => n.startsWith(name + '/'));
    const selectedBelow = onlySubscribed ? under.filter((n) => subs.has(n)) : [];
    let childInfo = false;
    if (!selected(name)) {
      // RFC 5258 §3.5: a level whose subscribed descendants the pattern does not reach
      // is listed for them
      if (a.lsub ? !percentRegs.some((re) => re.test(name)) : !recursive) continue;
      if (!selectedBelow.some((n) => !matches(n))) continue;
      childInfo = recursive;
    } else childInfo = recursive && selectedBelow.length > 0;
    const f = existing.get(name);
    const attrs: string[] = [];
    if (a.lsub) {
      if (!subs.has(name)) attrs.push('\\Noselect');
      if (f?.specialUse) attrs.push(f.specialUse);
      lines.push(`* LSUB (${attrs.join(' ')}) "/" ${quoteName(s, name)}`);
      continue;
    }
    if (a.ret.has('SUBSCRIBED') && subs.has(name)) attrs.push('\\Subscribed');
    if (!f) attrs.push(a.extended ? '\\NonExistent' : '\\Noselect');
    const kids = (onlySubscribed ? under : under.filter((n) => existing.has(n))).length > 0;
    attrs.push(kids ? '\\HasChildren' : '\\HasNoChildren');
    // RFC 6154 §5.2: in the extended syntax only when asked for (as Dovecot)
    if (f?.specialUse && (!a.extended || onlySpecial || a.ret.has('SPECIAL-USE'))) attrs.push(f.specialUse);
    const info = childInfo ? ' (CHILDINFO ("SUBSCRIBED"))' : '';
    lines.push(`* LIST (${attrs.join(' ')}) "/" ${quoteName(s, name)}${info}`);
    if (a.status && f) {
      try {
        lines.push(await statusLine(s, name, a.status));
      } catch {
        // a folder deleted meanwhile: no STATUS for it
      }
    }
  }
  if (lines.length) s.send(lines.join('\r\n') + '\r\n');
  return s.ok(tag, `${cmd} completed`);
}

// --- SELECT -------------------------------------------------------------------------

interface SelectArgs {
  /** A name that is no modified UTF-7 fails the SELECT once the mailbox before is closed. */
  name: string | MailboxNameError;
  condstore: boolean;
  qresync: { validity: number; modseq: number; known: SequenceSet | null } | null;
}

function parseSelect(r: ArgReader): SelectArgs {
  let name: string | MailboxNameError;
  try {
    name = r.mailbox();
  } catch (err) {
    if (!(err instanceof MailboxNameError)) throw err;
    name = err;
  }
  const a: SelectArgs = { name, condstore: false, qresync: null };
  const params = r.optionalList();
  for (let i = 0; params && i < params.length; i++) {
    const p = tokenText(params[i]!).toUpperCase();
    if (p === 'CONDSTORE') a.condstore = true;
    else if (p === 'QRESYNC') {
      const q = params[++i];
      if (q?.t !== 'list') throw new ParseError('QRESYNC needs parameters');
      const qr = new ArgReader(q.v);
      const validity = qr.number('uidvalidity');
      const modseq = qr.number('modseq');
      const known = qr.remaining && qr.peek()?.t === 'atom' ? qr.seqSet() : null;
      // `$` names no message before a mailbox is selected (RFC 5182 §2.1 empties it)
      if (known?.saved) throw new ParseError('$ is not a set of known UIDs');
      a.qresync = { validity, modseq, known };
    } else throw new ParseError(`unknown SELECT parameter ${p}`);
  }
  r.end();
  return a;
}

async function runSelect(s: AuthedContext, tag: string, a: SelectArgs, name: string): Promise<void> {
  const readOnly = name === 'EXAMINE';
  // RFC 7162 §3.2.11, RFC 9051 §7.1: the boundary between the two mailboxes' responses;
  // required with QRESYNC and in IMAP4rev2, harmless before (Dovecot sends it always)
  if (s.selected) s.send('* OK [CLOSED] Previous mailbox closed\r\n');
  s.unselect();
  if (a.qresync && !s.enabled.qresync) throw reply.bad('QRESYNC is not enabled');
  if (a.condstore) s.enabled.add('CONDSTORE');
  // RFC 9051 §6.3.2: a SELECT that fails leaves no mailbox selected, whatever the reason
  if (a.name instanceof MailboxNameError) throw a.name;
  const f = await requireFolder(s, a.name);
  // the folder's index file is read while the directories are
  void s.deps.cache.ready(f);
  const snap = await f.snapshot();
  // RFC 3501 §2.3.2: an IMAP4rev1 session selecting read-write claims the messages no
  // session has seen as \Recent; EXAMINE shows them without claiming them (§6.3.2)
  const recentFrom = s.enabled.rev2 ? null : readOnly ? f.recentMark() : await f.claimRecent(snap.uidNext);
  void s.deps.cache.select(f, snap.messages);
  const view = new SelectedMailbox(f, a.name, readOnly, snap, s.enabled.rev2, recentFrom);
  const lines = [...view.flagLines(snap), `* ${snap.messages.length} EXISTS`];
  if (!s.enabled.rev2) {
    lines.push(`* ${view.recent.size} RECENT`);
    const unseen = snap.messages.findIndex((m) => !m.flags.includes('\\Seen'));
    if (unseen >= 0) lines.push(`* OK [UNSEEN ${unseen + 1}] First unseen`);
  }
  lines.push(
    `* OK [UIDVALIDITY ${snap.validity}] UIDs valid`,
    `* OK [UIDNEXT ${snap.uidNext}] Predicted next UID`,
    `* OK [HIGHESTMODSEQ ${snap.highestModseq}] Highest`,
  );
  if (s.enabled.rev2) lines.push(`* LIST () "/" ${quoteName(s, a.name)}`);
  // RFC 7162 §3.2.5: QRESYNC resynchronisation inside SELECT
  if (a.qresync && a.qresync.validity === snap.validity) {
    const { modseq, known } = a.qresync;
    const vanished = await view.vanishedEarlier(modseq, known);
    if (vanished) lines.push(vanished);
    for (const m of snap.messages) {
      if (m.modseq > modseq) {
        lines.push(
          `* ${view.seqOf(m.uid)} FETCH (UID ${m.uid} FLAGS (${view.flags(m)}) MODSEQ (${m.modseq}))`,
        );
      }
    }
  }
  s.send(lines.join('\r\n') + '\r\n');
  s.select(view);
  s.send(`${tag} OK [${readOnly ? 'READ-ONLY' : 'READ-WRITE'}] ${name} completed\r\n`);
}

// --- the group ----------------------------------------------------------------------

export const mailboxCommands: CommandGroup = {
  SELECT: command({ states: AUTHED, parse: parseSelect, run: runSelect }),
  EXAMINE: command({ states: AUTHED, parse: parseSelect, run: runSelect }),
  CREATE: command({
    states: AUTHED,
    // a trailing hierarchy separator only says the client means to create children (RFC 9051 §6.3.4)
    parse: (r) => oneMailbox(r).replace(/\/$/, ''),
    async run(s, tag, name) {
      await s.mailbox.create(newFolderName(name)).catch(folderErr);
      s.changed(name, { kind: 'folder' });
      await s.ok(tag, 'CREATE completed');
    },
  }),
  DELETE: command({
    states: AUTHED,
    parse: oneMailbox,
    async run(s, tag, name) {
      if (s.selected?.name === name) throw reply.cannot('Mailbox is selected');
      // the subscription stays (RFC 3501 §6.3.9: never removed unilaterally); LIST
      // (SUBSCRIBED) shows it \NonExistent
      await s.mailbox.delete(name).catch(folderErr);
      s.changed(name, { kind: 'folder' });
      await s.ok(tag, 'DELETE completed');
    },
  }),
  RENAME: command({
    states: AUTHED,
    parse: (r) => {
      const from = r.mailbox();
      const to = r.mailbox();
      r.end();
      return { from, to };
    },
    async run(s, tag, a) {
      await s.mailbox.rename(a.from, newFolderName(a.to)).catch(folderErr);
      s.changed(a.to, { kind: 'folder', oldFolder: a.from });
      await s.ok(tag, 'RENAME completed');
    },
  }),
  SUBSCRIBE: command({
    states: AUTHED,
    parse: oneMailbox,
    async run(s, tag, name) {
      await requireFolder(s, name);
      await s.mailbox.subscribe(name);
      s.changed(name, { kind: 'subscription' });
      await s.ok(tag, 'SUBSCRIBE completed');
    },
  }),
  UNSUBSCRIBE: command({
    states: AUTHED,
    parse: oneMailbox,
    async run(s, tag, name) {
      await s.mailbox.unsubscribe(name);
      s.changed(name, { kind: 'subscription' });
      await s.ok(tag, 'UNSUBSCRIBE completed');
    },
  }),
  LIST: command({ states: AUTHED, parse: (r) => parseList(r, false), run: runList }),
  LSUB: command({ states: AUTHED, parse: (r) => parseList(r, true), run: runList }),
  STATUS: command({
    states: AUTHED,
    parse: (r) => {
      // the answer names the mailbox as the client wrote it ("inbox" too), as Dovecot
      // does: a client may match the answer to its command by that name
      const { name, written } = r.mailboxAsWritten();
      const items = statusItems(r.list('status items'));
      r.end();
      return { name, written, items };
    },
    async run(s, tag, a) {
      const line = await statusLine(s, a.name, a.items, a.written);
      // with a mailbox selected, a CONDSTORE enabling command (RFC 7162 §3.1), as Dovecot
      // takes it: the mailbox's HIGHESTMODSEQ is told and FETCH carries MODSEQ from now on
      if (s.selected && a.items.includes('HIGHESTMODSEQ')) enableCondstoreAuthed(s);
      s.send(line + '\r\n');
      await s.ok(tag, 'STATUS completed');
    },
  }),
};
