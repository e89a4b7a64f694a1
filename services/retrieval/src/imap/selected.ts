import { formatSequence, inRanges, resolveSequenceSet, type SequenceSet } from '@mailyard/imap-core';
import type { FolderSnapshot, MailFolder, MessageInfo } from '@mailyard/mailstore';

export interface UpdateOptions {
  /** RFC 9051 §7.5.1: no EXPUNGE during FETCH, STORE, SEARCH (non-UID). */
  allowExpunge: boolean;
  condstore: boolean;
  qresync: boolean;
}

/**
 * The session's view of the selected folder: sequence numbers as the client knows
 * them, and the flags it was last told, so only differences are announced.
 */
export class SelectedMailbox {
  uids: number[] = [];
  private infos = new Map<number, MessageInfo>();
  /** Flags + modseq the client was last told, by UID. */
  private told = new Map<number, string>();
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

  /**
   * `recentFrom`: the first UID this session may show as \Recent (what it claimed, or what
   * nobody claimed yet when read-only); null in an IMAP4rev2 session, which has no \Recent.
   */
  constructor(
    readonly folder: MailFolder,
    readonly name: string,
    readonly readOnly: boolean,
    snap: FolderSnapshot,
    private readonly recentFrom: number | null = null,
  ) {
    this.validity = snap.validity;
    this.uidNext = snap.uidNext;
    this.highestModseq = snap.highestModseq;
    this.synced = snap;
    for (const m of snap.messages) {
      this.uids.push(m.uid);
      this.infos.set(m.uid, m);
      this.told.set(m.uid, stamp(m));
      if (recentFrom !== null && m.uid >= recentFrom) this.recent.add(m.uid);
    }
    this.toldRecent = this.recent.size;
  }

  /** The flags of a message as this session shows them: with \Recent for an IMAP4rev1 session. */
  flags(m: MessageInfo): string {
    return this.recent.has(m.uid) ? [...m.flags, '\\Recent'].join(' ') : m.flags.join(' ');
  }

  get exists(): number {
    return this.uids.length;
  }

  info(uid: number): MessageInfo | undefined {
    return this.infos.get(uid);
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
    if (byUid) {
      // RFC 9051 §6.4.9: `*` in a UID set is the largest UID in use
      const ranges = resolveSequenceSet(set, this.uids[this.uids.length - 1]!);
      for (let i = 0; i < this.uids.length; i++) {
        const uid = this.uids[i]!;
        if (!inRanges(uid, ranges)) continue;
        const m = this.infos.get(uid);
        if (m && !this.gone.has(uid)) out.push({ seq: i + 1, m });
      }
      return out;
    }
    const ranges = resolveSequenceSet(set, this.uids.length);
    for (const [a, b] of ranges) {
      for (let s = a; s <= Math.min(b, this.uids.length); s++) {
        const uid = this.uids[s - 1]!;
        const m = this.infos.get(uid);
        if (m && !this.gone.has(uid)) out.push({ seq: s, m });
      }
    }
    return out;
  }

  /** True when a non-UID sequence set names numbers beyond what the client knows. */
  outOfRange(set: SequenceSet): boolean {
    return set.ranges.some((r) => (r.from ?? 0) > this.uids.length || (r.to ?? 0) > this.uids.length);
  }

  /** Records what a command told the client about one message (STORE, FETCH FLAGS). */
  told_(m: MessageInfo): void {
    this.infos.set(m.uid, m);
    this.told.set(m.uid, stamp(m));
    if (m.modseq > this.highestModseq) this.highestModseq = m.modseq;
  }

  /** Re-reads the folder and returns the untagged lines that bring the client up to date. */
  async update(opts: UpdateOptions): Promise<string[]> {
    let snap = await this.folder.snapshot();
    let recentFrom = this.recentFrom === null ? null : snap.firstRecent;
    if (recentFrom !== null && !this.readOnly && snap.firstRecent < snap.uidNext) {
      // new messages nobody has seen as recent: this session is the first told of them
      ({ from: recentFrom, snapshot: snap } = await this.folder.claimRecent());
    }
    // the folder keeps returning the same snapshot object while nothing changed on disk:
    // then there is nothing to tell (this runs after every command, on every message)
    if (snap === this.synced && (!this.gone.size || !opts.allowExpunge)) return [];
    this.synced = snap;
    const lines: string[] = [];
    const now = new Map(snap.messages.map((m) => [m.uid, m]));
    for (const uid of this.uids) if (!now.has(uid)) this.gone.add(uid);
    if (this.gone.size && opts.allowExpunge) {
      const gone = [...this.gone];
      if (opts.qresync) {
        lines.push(`* VANISHED ${formatSequence(gone)}`);
        this.uids = this.uids.filter((u) => !this.gone.has(u));
      } else {
        // highest first: each EXPUNGE leaves the lower sequence numbers unchanged
        for (let i = this.uids.length - 1; i >= 0; i--) {
          if (this.gone.has(this.uids[i]!)) {
            lines.push(`* ${i + 1} EXPUNGE`);
            this.uids.splice(i, 1);
          }
        }
      }
      for (const u of gone) {
        this.infos.delete(u);
        this.told.delete(u);
        this.recent.delete(u);
      }
      this.gone.clear();
    }
    const last = this.uids[this.uids.length - 1] ?? 0;
    let added = false;
    for (const m of snap.messages) {
      if (m.uid > last && !this.infos.has(m.uid)) {
        this.uids.push(m.uid);
        this.infos.set(m.uid, m);
        this.told.set(m.uid, stamp(m));
        if (recentFrom !== null && m.uid >= recentFrom) this.recent.add(m.uid);
        added = true;
      }
    }
    if (added) lines.push(`* ${this.uids.length} EXISTS`);
    // RFC 3501 §7.3.2: sent when the number of recent messages changes
    if (this.recentFrom !== null && this.recent.size !== this.toldRecent) {
      this.toldRecent = this.recent.size;
      lines.push(`* ${this.recent.size} RECENT`);
    }
    for (let i = 0; i < this.uids.length; i++) {
      const uid = this.uids[i]!;
      const m = now.get(uid);
      if (!m) continue;
      this.infos.set(uid, m);
      const st = stamp(m);
      if (this.told.get(uid) !== st) {
        this.told.set(uid, st);
        const ms = opts.condstore ? ` MODSEQ (${m.modseq})` : '';
        lines.push(`* ${i + 1} FETCH (UID ${uid} FLAGS (${this.flags(m)})${ms})`);
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
