// Commands on folders as a whole (RFC 9051 §6.3): selecting one, creating, deleting,
// renaming, subscribing, LIST (with LIST-EXTENDED, SPECIAL-USE, LIST-STATUS) and STATUS.
import {
  ArgReader,
  formatSequence,
  ParseError,
  tokenText,
  type SequenceSet,
  type Token,
} from '@mailyard/imap-core';
import type { AuthedContext } from '../context.js';
import { reply } from '../replies.js';
import { SelectedMailbox } from '../selected.js';
import { oneMailbox, SYSTEM_FLAGS } from './args.js';
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

async function statusLine(s: AuthedContext, name: string, items: string[]): Promise<string> {
  const f = await requireFolder(s, name);
  const snap = await f.snapshot();
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
        return `SIZE ${snap.messages.reduce((a, m) => a + Math.max(m.size, 0), 0)}`;
      case 'RECENT':
        return `RECENT ${snap.messages.filter((m) => m.uid >= snap.firstRecent).length}`;
      default:
        return `HIGHESTMODSEQ ${snap.highestModseq}`;
    }
  });
  return `* STATUS ${quoteName(s, name)} (${vals.join(' ')})`;
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
}

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
  if (!lsub) {
    const sel = r.optionalList();
    for (const t of sel ?? []) select.add(tokenText(t).toUpperCase());
  }
  const ref = r.astring('reference');
  const pt = r.next('mailbox pattern');
  const rawPatterns =
    pt.t === 'list'
      ? pt.v.map(tokenText)
      : pt.t === 'nil'
        ? []
        : [pt.t === 'string' ? pt.v.toString('utf8') : tokenText(pt)];
  const patterns = rawPatterns.map((p) => (r.utf8Names ? p : decodeName(p)));
  const ret = new Set<string>();
  let status: string[] | null = null;
  if (r.remaining) {
    if (r.atom('RETURN').toUpperCase() !== 'RETURN') throw new ParseError('expected RETURN');
    const opts = r.list('return options');
    for (let i = 0; i < opts.length; i++) {
      const o = tokenText(opts[i]!).toUpperCase();
      if (o === 'STATUS') {
        const next = opts[++i];
        if (next?.t !== 'list') throw new ParseError('STATUS needs a list');
        status = statusItems(next.v);
      } else ret.add(o);
    }
  }
  r.end();
  if (select.has('SUBSCRIBED')) ret.add('SUBSCRIBED');
  return { select, ref, patterns, ret, status, lsub };
}

function decodeName(p: string): string {
  try {
    return new ArgReader([{ t: 'atom', v: p }], false).mailbox();
  } catch {
    return p;
  }
}

async function runList(s: AuthedContext, tag: string, a: ListArgs): Promise<void> {
  const cmd = a.lsub ? 'LSUB' : 'LIST';
  if (a.patterns.length === 1 && a.patterns[0] === '' && !a.lsub) {
    s.send(`* LIST (\\Noselect) "/" ""\r\n`);
    return s.ok(tag, 'LIST completed');
  }
  const folders = await s.mailbox.list();
  const subs = new Set(await s.mailbox.subscriptions());
  const names = folders.map((f) => f.name);
  const regs = a.patterns.map((p) => patternRegex(a.ref + p));
  const lines: string[] = [];
  const onlySubscribed = a.lsub || a.select.has('SUBSCRIBED');
  const onlySpecial = a.select.has('SPECIAL-USE');
  for (const f of folders) {
    if (!regs.some((re) => re.test(f.name))) continue;
    if (onlySubscribed && !subs.has(f.name)) continue;
    if (onlySpecial && !f.specialUse) continue;
    const attrs: string[] = [];
    const kids = names.some((n) => n.startsWith(f.name + '/'));
    attrs.push(kids ? '\\HasChildren' : '\\HasNoChildren');
    if (f.specialUse && (!a.lsub || a.ret.has('SPECIAL-USE'))) attrs.push(f.specialUse);
    if (a.ret.has('SUBSCRIBED') && subs.has(f.name)) attrs.push('\\Subscribed');
    lines.push(`* ${cmd} (${attrs.join(' ')}) "/" ${quoteName(s, f.name)}`);
    if (a.status) {
      try {
        lines.push(await statusLine(s, f.name, a.status));
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
  name: string;
  condstore: boolean;
  qresync: { validity: number; modseq: number; known: SequenceSet | null } | null;
}

function parseSelect(r: ArgReader): SelectArgs {
  const name = r.mailbox();
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
  const f = await requireFolder(s, a.name);
  // the folder's index file is read while the directories are
  void s.deps.cache.ready(f);
  let snap = await f.snapshot();
  // RFC 3501 §2.3.2: an IMAP4rev1 session selecting read-write claims the messages no
  // session has seen as \Recent; EXAMINE shows them without claiming them (§6.3.2)
  let recentFrom: number | null = s.enabled.rev2 ? null : snap.firstRecent;
  if (recentFrom !== null && !readOnly && snap.firstRecent < snap.uidNext)
    ({ from: recentFrom, snapshot: snap } = await f.claimRecent());
  void s.deps.cache.select(f, snap.messages);
  const view = new SelectedMailbox(f, a.name, readOnly, snap, recentFrom);
  const kws = new Set<string>();
  for (const m of snap.messages) for (const fl of m.flags) if (!fl.startsWith('\\')) kws.add(fl);
  const flags = [...SYSTEM_FLAGS, ...kws].join(' ');
  const lines = [
    `* FLAGS (${flags})`,
    `* OK [PERMANENTFLAGS (${readOnly ? '' : flags + ' \\*'})] Flags permitted`,
    `* ${snap.messages.length} EXISTS`,
  ];
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
    const vanished = await f.vanishedSince(modseq);
    let gone = vanished ?? [];
    if (known) gone = gone.filter((u) => !view.seqOf(u));
    if (gone.length) lines.push(`* VANISHED (EARLIER) ${formatSequence(gone)}`);
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
      await s.ok(tag, 'CREATE completed');
    },
  }),
  DELETE: command({
    states: AUTHED,
    parse: oneMailbox,
    async run(s, tag, name) {
      if (s.selected?.name === name) throw reply.cannot('Mailbox is selected');
      await s.mailbox.delete(name).catch(folderErr);
      await s.mailbox.unsubscribe(name);
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
      await s.ok(tag, 'RENAME completed');
    },
  }),
  SUBSCRIBE: command({
    states: AUTHED,
    parse: oneMailbox,
    async run(s, tag, name) {
      await requireFolder(s, name);
      await s.mailbox.subscribe(name);
      await s.ok(tag, 'SUBSCRIBE completed');
    },
  }),
  UNSUBSCRIBE: command({
    states: AUTHED,
    parse: oneMailbox,
    async run(s, tag, name) {
      await s.mailbox.unsubscribe(name);
      await s.ok(tag, 'UNSUBSCRIBE completed');
    },
  }),
  LIST: command({ states: AUTHED, parse: (r) => parseList(r, false), run: runList }),
  LSUB: command({ states: AUTHED, parse: (r) => parseList(r, true), run: runList }),
  STATUS: command({
    states: AUTHED,
    parse: (r) => {
      const name = r.mailbox();
      const items = statusItems(r.list('status items'));
      r.end();
      return { name, items };
    },
    async run(s, tag, a) {
      s.send((await statusLine(s, a.name, a.items)) + '\r\n');
      await s.ok(tag, 'STATUS completed');
    },
  }),
};
