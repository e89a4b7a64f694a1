import {
  formatRanges,
  formatSequence,
  inRanges,
  missingRanges,
  resolveSequenceSet,
  sequenceSetOf,
  type SequenceSet,
} from '@mailyard/imap-core';
import { FolderGoneError, type FolderSnapshot, type MailFolder, type MessageInfo } from '@mailyard/mailstore';
import { SYSTEM_FLAGS } from './flags.js';

export interface UpdateOptions {
  /** RFC 9051 §7.5.1: no EXPUNGE during FETCH, STORE, SEARCH (non-UID). */
  allowExpunge: boolean;
  condstore: boolean;
  qresync: boolean;
}

/**
 * The selected folder is no longer there: deleted or renamed, by this session or another,
 * or deleted and another created under its name (another UIDVALIDITY). The numbers the
 * client holds name nothing now; the session cannot go on.
 */
export class SelectedGoneError extends Error {
  constructor(name: string) {
    super(`selected folder ${name} is gone`);
  }
}

/**
 * The session's view of the selected folder: sequence numbers as the client knows
 * them, and the flags it was last told, so only differences are announced.
 */
export class SelectedMailbox {
  uids: number[] = [];
  /** The message of each UID in `uids` (same index), as the client was last told of it. */
  private msgs: MessageInfo[] = [];
  /** The flags the client was last told, by index in `uids`. */
  private told: string[] = [];
  validity: number;
  uidNext: number;
  highestModseq: number;
  /** UIDs gone from the store that the client has not been told about. */
  private gone = new Set<number>();
  /** The folder snapshot this view was last brought up to date with. */
  private synced: FolderSnapshot;
  /** UIDs this session sees as \Recent (RFC 3501 §2.3.2; IMAP4rev1 sessions only). */
  readonly recent = new Set<number>();
  /** The RECENT count the client was last told. */
  private toldRecent = 0;
  /** The keywords the client was last told in FLAGS (RFC 3501 §7.2.6). */
  private toldKeywords: string;
  /** The UIDs below this were claimed (or, read-only, looked at) for \Recent. */
  private claimedTo: number;
  /**
   * The result SEARCH RETURN (SAVE) kept, which `$` names (RFC 5182 §2.1): messages, as
   * their UIDs, so an expunge takes one out and the others keep it under new numbers.
   * Empty when a mailbox is selected, and after a SEARCH with SAVE that failed.
   */
  saved: ReadonlySet<number> = new Set();

  /**
   * `rev2`: the session enabled IMAP4rev2, which sees a message/global part as an attached
   * message (encapsulated, in @mailyard/imap-core); set too by an ENABLE while selected,
   * so that SEARCH reads such a part as FETCH now shows it. `recentFrom`: the first UID this
   * session may show as \Recent (what it claimed, or what nobody claimed yet when
   * read-only); null in an IMAP4rev2 session, which has no \Recent.
   */
  constructor(
    readonly folder: MailFolder,
    readonly name: string,
    readonly readOnly: boolean,
    snap: FolderSnapshot,
    public rev2: boolean,
    private readonly recentFrom: number | null = null,
  ) {
    this.validity = snap.validity;
    this.uidNext = snap.uidNext;
    this.highestModseq = snap.highestModseq;
    this.synced = snap;
    for (const m of snap.messages) {
      this.uids.push(m.uid);
      this.msgs.push(m);
      this.told.push(stamp(m));
      if (recentFrom !== null && m.uid >= recentFrom) this.recent.add(m.uid);
    }
    this.toldRecent = this.recent.size;
    this.toldKeywords = snap.keywords.join(' ');
    this.claimedTo = snap.uidNext;
  }

  /** The FLAGS and PERMANENTFLAGS lines for the folder's flags as they are in `snap`. */
  flagLines(snap: FolderSnapshot): string[] {
    this.toldKeywords = snap.keywords.join(' ');
    const flags = [...SYSTEM_FLAGS, ...snap.keywords].join(' ');
    return [
      `* FLAGS (${flags})`,
      `* OK [PERMANENTFLAGS (${this.readOnly ? '' : flags + ' \\*'})] Flags permitted`,
    ];
  }

  /**
   * FLAGS and PERMANENTFLAGS again when a keyword was defined since the client was told:
   * sent before any FETCH that shows it (RFC 3501 §7.2.6).
   */
  keywordLines(snap: FolderSnapshot): string[] {
    return snap.keywords.join(' ') === this.toldKeywords ? [] : this.flagLines(snap);
  }

  /** The flags of a message as this session shows them: with \Recent for an IMAP4rev1 session. */
  flags(m: MessageInfo): string {
    return this.recent.has(m.uid) ? [...m.flags, '\\Recent'].join(' ') : m.flags.join(' ');
  }

  get exists(): number {
    return this.uids.length;
  }

  info(uid: number): MessageInfo | undefined {
    const seq = this.seqOf(uid);
    return seq ? this.msgs[seq - 1] : undefined;
  }

  seqOf(uid: number): number {
    let lo = 0;
    let hi = this.uids.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const u = this.uids[mid]!;
      if (u === uid) return mid + 1;
      if (u < uid) lo = mid + 1;
      else hi = mid - 1;
    }
    return 0;
  }

  /** Messages a sequence set names, in sequence order; expunged-but-unannounced ones are skipped. */
  resolve(set: SequenceSet, byUid: boolean): { seq: number; m: MessageInfo }[] {
    const out: { seq: number; m: MessageInfo }[] = [];
    if (!this.uids.length) return out;
    // `$`: the same messages in a UID command and in one by number (RFC 5182 §2.1)
    if (set.saved) return this.resolve(sequenceSetOf(this.saved), true);
    if (byUid) {
      // RFC 9051 §6.4.9: `*` in a UID set is the largest UID in use
      const ranges = resolveSequenceSet(set, this.uids[this.uids.length - 1]!);
      for (let i = 0; i < this.uids.length; i++) {
        const uid = this.uids[i]!;
        if (!inRanges(uid, ranges)) continue;
        if (!this.gone.has(uid)) out.push({ seq: i + 1, m: this.msgs[i]! });
      }
      return out;
    }
    const ranges = resolveSequenceSet(set, this.uids.length);
    for (const [a, b] of ranges) {
      for (let s = a; s <= Math.min(b, this.uids.length); s++) {
        if (!this.gone.has(this.uids[s - 1]!)) out.push({ seq: s, m: this.msgs[s - 1]! });
      }
    }
    return out;
  }

  /** True when `set` names a message expunged elsewhere that the client was not told of yet. */
  namesExpunged(set: SequenceSet, byUid: boolean): boolean {
    if (!this.gone.size || !this.uids.length) return false;
    if (set.saved) return this.namesExpunged(sequenceSetOf(this.saved), true);
    if (byUid) {
      const ranges = resolveSequenceSet(set, this.uids[this.uids.length - 1]!);
      for (const uid of this.gone) if (inRanges(uid, ranges)) return true;
      return false;
    }
    const ranges = resolveSequenceSet(set, this.uids.length);
    for (const uid of this.gone) if (inRanges(this.seqOf(uid), ranges)) return true;
    return false;
  }

  /**
   * The `* VANISHED (EARLIER)` line for the UIDs of `set` (every UID issued when null)
   * expunged after `modseq` (QRESYNC, RFC 7162 §3.2.5.1 and §3.2.6), or null when there
   * are none. When the store's history of expunges no longer reaches back that far, every
   * UID of the set that is not in the mailbox is reported: a server that cannot tell may
   * name UIDs the client never had, which the client ignores, but it must not leave out
   * one the client still holds.
   */
  async vanishedEarlier(modseq: number, set: SequenceSet | null): Promise<string | null> {
    const last = this.uidNext - 1;
    if (last < 1) return null;
    if (set?.saved) set = sequenceSetOf(this.saved);
    // `*` is the highest UID issued, not the highest still here: a client that asks with
    // 1:* must hear that its last messages went too (as Dovecot tells it)
    const within = (set ? resolveSequenceSet(set, last) : [[1, last]])
      .map(([a, b]) => [Math.max(1, a), Math.min(b, last)] as const)
      .filter(([a, b]) => a <= b);
    const history = await this.folder.vanishedSince(modseq);
    if (history) {
      const gone = history.filter((u) => inRanges(u, within));
      return gone.length ? `* VANISHED (EARLIER) ${formatSequence(gone)}` : null;
    }
    const missing = missingRanges(
      within,
      this.uids.filter((u) => !this.gone.has(u)),
    );
    return missing.length ? `* VANISHED (EARLIER) ${formatRanges(missing)}` : null;
  }

  /**
   * True when a set of sequence numbers names one beyond the messages the client knows,
   * or `*` when it knows none (RFC 9051 §9 seq-number: "an error"). UIDs and `$` never are.
   */
  outOfRange(set: SequenceSet, byUid: boolean): boolean {
    if (byUid || set.saved) return false;
    const n = this.uids.length;
    return set.ranges.some(
      (r) => (r.from ?? n) > n || (r.to ?? n) > n || (n === 0 && (r.from ?? r.to) === null),
    );
  }

  /** Records what a command told the client about one message (STORE, FETCH FLAGS). */
  told_(m: MessageInfo): void {
    const seq = this.seqOf(m.uid);
    if (seq) {
      this.msgs[seq - 1] = m;
      this.told[seq - 1] = stamp(m);
    }
    if (m.modseq > this.highestModseq) this.highestModseq = m.modseq;
  }

  /**
   * Re-reads the folder and returns the untagged lines that bring the client up to date;
   * SelectedGoneError when there is no such folder to tell of any more.
   */
  async update(opts: UpdateOptions): Promise<string[]> {
    let snap: FolderSnapshot;
    try {
      snap = await this.folder.snapshot();
    } catch (err) {
      throw err instanceof FolderGoneError ? new SelectedGoneError(this.name) : err;
    }
    // another folder under the same name: its UIDs are not the ones the client holds, and
    // telling them as changes of those would give the client other messages under its
    // UIDs, what UIDVALIDITY exists to prevent (RFC 3501 §2.3.1.1)
    if (snap.validity !== this.validity) throw new SelectedGoneError(this.name);
    // the folder keeps returning the same snapshot object while nothing changed on disk:
    // then there is nothing to tell (this runs after every command, on every message)
    if (snap === this.synced && (!this.gone.size || !opts.allowExpunge)) return [];
    let recentFrom: number | null = null;
    if (this.recentFrom !== null && snap.uidNext > this.claimedTo) {
      // new messages: recent to this session if nobody has seen them as recent yet
      recentFrom = this.readOnly ? this.folder.recentMark() : await this.folder.claimRecent(snap.uidNext);
      this.claimedTo = snap.uidNext;
    }
    // only now: a claim that failed leaves this snapshot to be told at the next update
    this.synced = snap;
    const lines: string[] = [];
    // both in UID order: one walk finds what is gone and what each known UID is now
    const now: (MessageInfo | undefined)[] = new Array<MessageInfo | undefined>(this.uids.length);
    for (let i = 0, j = 0; i < this.uids.length; i++) {
      const uid = this.uids[i]!;
      while (j < snap.messages.length && snap.messages[j]!.uid < uid) j++;
      const m = snap.messages[j];
      if (m?.uid === uid) now[i] = m;
      else this.gone.add(uid);
    }
    if (this.gone.size && opts.allowExpunge) {
      const gone = [...this.gone];
      if (opts.qresync) lines.push(`* VANISHED ${formatSequence(gone)}`);
      else {
        // highest first: each EXPUNGE leaves the lower sequence numbers unchanged
        for (let i = this.uids.length - 1; i >= 0; i--)
          if (this.gone.has(this.uids[i]!)) lines.push(`* ${i + 1} EXPUNGE`);
      }
      // new arrays: a caller may hold the numbering from before (contextUpdates)
      const uids: number[] = [];
      const msgs: MessageInfo[] = [];
      const told: string[] = [];
      for (let i = 0; i < this.uids.length; i++) {
        if (this.gone.has(this.uids[i]!)) continue;
        now[uids.length] = now[i];
        uids.push(this.uids[i]!);
        msgs.push(this.msgs[i]!);
        told.push(this.told[i]!);
      }
      now.length = uids.length;
      this.uids = uids;
      this.msgs = msgs;
      this.told = told;
      for (const u of gone) this.recent.delete(u);
      this.gone.clear();
    }
    const last = this.uids[this.uids.length - 1] ?? 0;
    let added = false;
    let from = snap.messages.length;
    while (from > 0 && snap.messages[from - 1]!.uid > last) from--;
    for (let i = from; i < snap.messages.length; i++) {
      const m = snap.messages[i]!;
      this.uids.push(m.uid);
      this.msgs.push(m);
      this.told.push(stamp(m));
      if (recentFrom !== null && m.uid >= recentFrom) this.recent.add(m.uid);
      added = true;
    }
    lines.push(...this.keywordLines(snap));
    if (added) lines.push(`* ${this.uids.length} EXISTS`);
    // RFC 3501 §7.3.2: sent when the number of recent messages changes
    if (this.recentFrom !== null && this.recent.size !== this.toldRecent) {
      this.toldRecent = this.recent.size;
      lines.push(`* ${this.recent.size} RECENT`);
    }
    for (let i = 0; i < now.length; i++) {
      const m = now[i];
      // the folder keeps the object of a message that did not change
      if (!m || this.msgs[i] === m) continue;
      const uid = m.uid;
      this.msgs[i] = m;
      const st = stamp(m);
      if (this.told[i] !== st) {
        this.told[i] = st;
        // RFC 7162 §3.2.4: with CONDSTORE the UID and MODSEQ go with every flag change
        const items = opts.condstore
          ? `UID ${uid} FLAGS (${this.flags(m)}) MODSEQ (${m.modseq})`
          : `FLAGS (${this.flags(m)})`;
        lines.push(`* ${i + 1} FETCH (${items})`);
      }
    }
    this.uidNext = snap.uidNext;
    this.highestModseq = snap.highestModseq;
    return lines;
  }
}

function stamp(m: MessageInfo): string {
  return m.flags.join(' ');
}
