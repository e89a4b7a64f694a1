import {
  casemap,
  decodeText,
  decodeHeader,
  decodeTransfer,
  decodeWords,
  encapsulated,
  header,
  headerDateDay,
  inRanges,
  parseAddressList,
  resolveSequenceSet,
  sequenceSetOf,
  type Address,
  type MimePart,
  type SearchKey,
  type SeqRange,
  type SequenceSet,
} from '@mailyard/imap-core';
import type { MailFolder, MessageInfo } from '@mailyard/mailstore';
import type { MessageCache } from '../message-cache.js';
import type { SelectedMailbox } from './selected.js';

/**
 * `key` with `$` (RFC 5182) replaced by the messages it names as the command starts, by
 * UID: a SAVE by this command or a later one does not change what this search, or an
 * open CONTEXT update of it (RFC 5267 §4), matches.
 */
export function withSavedNow(key: SearchKey, saved: ReadonlySet<number>): SearchKey {
  switch (key.k) {
    case 'seq':
    case 'uid':
      return key.set.saved ? { k: 'uid', set: sequenceSetOf(saved) } : key;
    case 'not':
      return { k: 'not', key: withSavedNow(key.key, saved) };
    case 'or':
      return { k: 'or', a: withSavedNow(key.a, saved), b: withSavedNow(key.b, saved) };
    case 'and':
      return { k: 'and', keys: key.keys.map((k) => withSavedNow(k, saved)) };
    default:
      return key;
  }
}

const ADDRESS_FIELDS = new Set(['from', 'to', 'cc', 'bcc']);

/** An address as a search sees it: `Name <mailbox@host>`. */
function addressText(a: Address): string {
  const spec = a.host ? `${a.mailbox ?? ''}@${a.host}` : (a.mailbox ?? '');
  return a.name ? `${decodeHeader(a.name)} <${spec}>` : spec;
}

function needsBody(k: SearchKey): boolean {
  switch (k.k) {
    case 'body':
    case 'text':
      return true;
    case 'not':
      return needsBody(k.key);
    case 'or':
      return needsBody(k.a) || needsBody(k.b);
    case 'and':
      return k.keys.some(needsBody);
    case 'all':
    case 'date':
    case 'flag':
    case 'header':
    case 'modseq':
    case 'new':
    case 'old':
    case 'recent':
    case 'seq':
    case 'size':
    case 'uid':
      return false;
  }
}

/**
 * The decoded text of each leaf part: what BODY looks in. An attached message
 * (message/rfc822) adds the text of its parts, not its header: BODY "doesn't match any
 * header fields" (RFC 9051 §6.4.4), an attached message's From or Subject no more than
 * the message's own, as on Dovecot; TEXT finds them (headerBlocks). message/global is an
 * attached message only to an IMAP4rev2 session (see encapsulated): to any other it is a
 * leaf whose text is its whole body, the header inside included, as FETCH BODY[n] shows
 * it and as Dovecot searches it.
 */
function textParts(data: Buffer, p: MimePart, rev2: boolean, out: string[]): void {
  if (p.children.length) {
    for (const c of p.children) textParts(data, c, rev2, out);
    return;
  }
  const message = encapsulated(p, rev2);
  if (message) {
    textParts(data, message, rev2, out);
    return;
  }
  if (p.type === 'text' || p.type === 'message') {
    out.push(decodeText(decodeTransfer(data.subarray(p.bodyStart, p.end), p.encoding), p.params.charset));
  }
}

/**
 * The header block of the message and of each part inside it: TEXT looks in "the header
 * (including MIME header fields)" (RFC 9051 §6.4.4), so an attachment's file name or a
 * part's own fields are found, as on Dovecot. The header of a message/global part's
 * message is one only where that part is an attached message (see textParts).
 */
function headerBlocks(data: Buffer, p: MimePart, rev2: boolean, out: string[]): void {
  out.push(data.toString('utf8', p.start, p.bodyStart));
  for (const c of p.children) headerBlocks(data, c, rev2, out);
  const message = encapsulated(p, rev2);
  if (message) headerBlocks(data, message, rev2, out);
}

/**
 * Evaluates SEARCH keys against messages (RFC 9051 §6.4.4). Strings match as substrings
 * by i;unicode-casemap (RFC 5051), the comparator of IMAP-I18N (RFC 5255 §4, which
 * RFC 9051 §6.4.4 points to) and the one SORT compares by: case left out, characters
 * decomposed, so "cafe" finds "Café" and "ǆ" finds "Ǆ", as on Dovecot.
 */
export class SearchEvaluator {
  /** Each set of the key resolved once per bound, not once per message it is tested on. */
  private readonly resolved = new WeakMap<SequenceSet, { max: number; ranges: SeqRange[] }>();

  constructor(
    private readonly view: SelectedMailbox,
    private readonly folder: MailFolder,
    private readonly cache: MessageCache,
  ) {}

  private ranges(set: SequenceSet, max: number): SeqRange[] {
    const hit = this.resolved.get(set);
    if (hit?.max === max) return hit.ranges;
    const ranges = resolveSequenceSet(set, max);
    this.resolved.set(set, { max, ranges });
    return ranges;
  }

  async matches(key: SearchKey, seq: number, m: MessageInfo): Promise<boolean> {
    const body = needsBody(key) ? await this.bodyText(m) : null;
    return this.eval(key, seq, m, body);
  }

  private async bodyText(m: MessageInfo): Promise<{ body: string; headers: string }> {
    const full = await this.cache.message(this.folder, m);
    const parts: string[] = [];
    textParts(full.data, full.mime, this.view.rev2, parts);
    const heads: string[] = [];
    headerBlocks(full.data, full.mime, this.view.rev2, heads);
    return { body: casemap(parts.join('\n')), headers: casemap(decodeWords(heads.join('\n'))) };
  }

  private async eval(
    k: SearchKey,
    seq: number,
    m: MessageInfo,
    body: { body: string; headers: string } | null,
  ): Promise<boolean> {
    const has = (f: string) => m.flags.some((x) => x.toLowerCase() === f.toLowerCase());
    switch (k.k) {
      case 'all':
        return true;
      case 'flag':
        return has(k.flag) === k.set;
      case 'new':
        return this.view.recent.has(m.uid) && !has('\\Seen');
      case 'recent':
        return this.view.recent.has(m.uid);
      case 'old':
        return !this.view.recent.has(m.uid);
      case 'seq':
        return inRanges(seq, this.ranges(k.set, this.view.exists));
      case 'uid':
        return inRanges(m.uid, this.ranges(k.set, this.view.uids[this.view.uids.length - 1] ?? 0));
      case 'header': {
        const raw = await this.cache.headerValues(this.folder, m, k.field);
        const values = raw.map((v) => casemap(decodeHeader(v)));
        // FROM, TO, CC, BCC also match the addresses as parsed, comments taken out
        // (`jane(the boss)@example.com` is jane@example.com; RFC 5322 §3.2.2)
        if (ADDRESS_FIELDS.has(k.field))
          for (const v of raw) for (const a of parseAddressList(v)) values.push(casemap(addressText(a)));
        if (!values.length) return false;
        return values.some((v) => v.includes(casemap(k.value)));
      }
      case 'body':
        return body!.body.includes(casemap(k.value));
      case 'text':
        return body!.body.includes(casemap(k.value)) || body!.headers.includes(casemap(k.value));
      case 'date': {
        let day: number;
        if (k.field === 'internal')
          day = Math.floor((await this.cache.internalDate(this.folder, m)) / 86400000);
        else {
          const d = header((await this.cache.header(this.folder, m)).fields, 'date');
          const sent = d ? headerDateDay(d) : null;
          if (sent === null) return false;
          day = sent;
        }
        return k.op === 'before' ? day < k.day : k.op === 'on' ? day === k.day : day >= k.day;
      }
      case 'size': {
        // RFC 9051 §6.4.4: RFC822.SIZE, the size as sent
        const size = await this.cache.sentSize(this.folder, m);
        return k.op === 'larger' ? size > k.n : size < k.n;
      }
      case 'modseq':
        return m.modseq >= k.n;
      case 'not':
        return !(await this.eval(k.key, seq, m, body));
      case 'or':
        return (await this.eval(k.a, seq, m, body)) || (await this.eval(k.b, seq, m, body));
      case 'and':
        for (const x of k.keys) if (!(await this.eval(x, seq, m, body))) return false;
        return true;
    }
  }
}
