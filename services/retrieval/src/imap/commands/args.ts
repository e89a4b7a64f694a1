// Argument shapes more than one command reads.
import { ParseError, type ArgReader, type Token } from '@mailyard/imap-core';
import type { AuthedContext, SelectedContext } from '../context.js';
import { MAX_KEYWORD_LENGTH, SYSTEM_FLAGS } from '../flags.js';
import { reply } from '../replies.js';
import type { SelectedMailbox } from '../selected.js';

/** No arguments. */
export const none = (r: ArgReader): void => r.end();

/** One mailbox name and nothing else (DELETE, SUBSCRIBE, GETQUOTAROOT...). */
export function oneMailbox(r: ArgReader): string {
  const name = r.mailbox();
  r.end();
  return name;
}

/**
 * A flag list, or (STORE) flags without parentheses up to the end of the command (RFC 9051
 * §9 store-att-flags: `flag-list / (flag *(SP flag))`): system flags spelled as RFC 9051
 * §2.3.2 does. A keyword longer than MAX_KEYWORD_LENGTH is NO [CANNOT].
 */
export function flagList(r: ArgReader): string[] {
  const t = r.next('flag list');
  const items: Token[] = t.t === 'list' ? t.v : [t];
  while (t.t !== 'list' && r.remaining) items.push(r.next('flag'));
  const flags = items.map((x) => {
    // NIL is an atom, and so a keyword: a flag list has no place for nil (RFC 9051 §9)
    if (x.t !== 'atom' && x.t !== 'nil') throw new ParseError('bad flag');
    const f = x.v;
    if (f.startsWith('\\')) {
      const sys = SYSTEM_FLAGS.find((s) => s.toLowerCase() === f.toLowerCase());
      if (!sys) throw new ParseError(`cannot set flag ${f}`);
      return sys;
    }
    // 7-bit (ATOM-CHAR is a CHAR): a keyword is sent back as an atom in every FLAGS
    if (!/^[^\s(){%*"\\\]\x80-\uffff]+$/.test(f)) throw new ParseError('bad keyword');
    return f;
  });
  // a well-formed keyword past the limit is refused, not a syntax error (Dovecot's answer)
  if (flags.some((f) => f.length > MAX_KEYWORD_LENGTH)) throw reply.cannot('Keyword length too long');
  return flags;
}

/**
 * A CONDSTORE enabling command (RFC 7162 §3.1: FETCH or SEARCH with MODSEQ, STORE with
 * UNCHANGEDSINCE, STATUS with HIGHESTMODSEQ) turns CONDSTORE on; the first one is
 * answered with the mailbox's HIGHESTMODSEQ before its tagged OK: that line, or null.
 */
export function enableCondstore(s: SelectedContext): string | null {
  if (s.enabled.condstore) return null;
  s.enabled.add('CONDSTORE');
  return highestModseqLine(s.selected);
}

/**
 * The same for a command allowed with no mailbox selected (NOTIFY with FlagChange, STATUS
 * with HIGHESTMODSEQ): CONDSTORE is on, and the HIGHESTMODSEQ of the selected mailbox, if
 * there is one, is sent at once.
 */
export function enableCondstoreAuthed(s: AuthedContext): void {
  const announce = s.selected ? enableCondstore(s as SelectedContext) : null;
  s.enabled.add('CONDSTORE');
  if (announce) s.send(announce);
}

/** The untagged OK that tells a client the selected mailbox's HIGHESTMODSEQ. */
export function highestModseqLine(view: SelectedMailbox): string {
  return `* OK [HIGHESTMODSEQ ${view.highestModseq}] Highest\r\n`;
}
