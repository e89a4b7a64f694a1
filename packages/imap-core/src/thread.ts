// THREAD (RFC 5256 §3, §4): the two threading algorithms over header facts, and the
// response syntax. No I/O: the service reads headers and dates, this module builds trees.
import { extractSubject } from './base-subject.js';
import { withoutComments } from './mime.js';

/** What threading needs to know about one message, in mailbox (sequence) order. */
export interface ThreadMessage {
  /** The number reported: the sequence number, or the UID for UID THREAD. */
  n: number;
  /** Raw header values (unfolded); null when the header is absent. */
  messageId: string | null;
  references: string | null;
  inReplyTo: string | null;
  subject: string | null;
  /** Sent date in ms (RFC 5256 §2.2: the Date header, else INTERNALDATE). */
  date: number;
}

/** A thread tree node; `n` is null for a dummy (a message that is referred to but absent). */
export interface ThreadNode {
  n: number | null;
  children: ThreadNode[];
}

export const THREAD_ALGORITHMS = ['REFERENCES', 'REFS', 'ORDEREDSUBJECT'] as const;
export type ThreadAlgorithm = (typeof THREAD_ALGORITHMS)[number];

/**
 * The valid msg-ids of a Message-ID, References or In-Reply-To value, in order
 * (RFC 5322 §3.6.4: "<" id-left "@" id-right ">"). Comments and anything between ids
 * (old clients put phrases in In-Reply-To) are skipped. The angle brackets are part of
 * the id; comparisons are case-sensitive (RFC 5256 §3).
 */
export function parseMsgIds(value: string | null): string[] {
  if (!value) return [];
  const text = withoutComments(value);
  const ids: string[] = [];
  for (const m of text.matchAll(/<([^<>]*)>/g)) {
    // CFWS may surround the "@" and the dot-atoms; quoted id-left keeps its quotes
    const id = m[1]!.replace(/\s+/g, '');
    if (/^[^@]+@[^@]+$/.test(id)) ids.push(`<${id}>`);
  }
  return ids;
}

/**
 * The references that link a message to its parent (RFC 5256 §3 step 1): the valid ids
 * of References; without any, the first valid id of In-Reply-To as the only reference.
 */
export function messageReferences(m: Pick<ThreadMessage, 'references' | 'inReplyTo'>): string[] {
  const refs = parseMsgIds(m.references);
  if (refs.length) return refs;
  return parseMsgIds(m.inReplyTo).slice(0, 1);
}

// --- REFERENCES -------------------------------------------------------------------

interface Container {
  msg: ThreadMessage | null;
  /** Position in the input: the tiebreak after the sent date (RFC 5256 §2.2). */
  seq: number;
  parent: Container | null;
  children: Container[];
  base: string;
  isReply: boolean;
  /** Heads the top level in place of a pruned dummy whose only child it was (REFS orders by it). */
  promoted?: boolean;
}

function container(msg: ThreadMessage | null, seq: number): Container {
  return { msg, seq, parent: null, children: [], base: '', isReply: false };
}

/** True when `a` is `b` or one of b's descendants. */
function isDescendant(a: Container, b: Container): boolean {
  for (let c: Container | null = a; c; c = c.parent) if (c === b) return true;
  return false;
}

function unlink(c: Container): void {
  const p = c.parent;
  if (!p) return;
  const i = p.children.indexOf(c);
  if (i >= 0) p.children.splice(i, 1);
  c.parent = null;
}

function link(parent: Container, child: Container): void {
  unlink(child);
  child.parent = parent;
  parent.children.push(child);
}

/** A dummy sorts by its first child, after that child's siblings are sorted (§3 steps 4, 6). */
function sortKey(c: Container): Container {
  let k = c;
  while (!k.msg && k.children.length) k = k.children[0]!;
  return k;
}

function byDate(a: Container, b: Container): number {
  const x = sortKey(a);
  const y = sortKey(b);
  const dx = x.msg?.date ?? 0;
  const dy = y.msg?.date ?? 0;
  return dx - dy || x.seq - y.seq;
}

/** Step 3: drops childless dummies and promotes a dummy's children (at the root only if it has one). */
function prune(c: Container, atRoot: boolean): Container[] {
  c.children = c.children.flatMap((k) => prune(k, false));
  for (const k of c.children) k.parent = c;
  if (c.msg) return [c];
  if (!c.children.length) return [];
  if (!atRoot) return c.children;
  if (c.children.length === 1) {
    c.children[0]!.promoted = true;
    return c.children;
  }
  return [c];
}

/**
 * Steps (1) to (3) of RFC 5256 §3, shared by REFERENCES and REFS: the message tree from
 * the reference chains, its dummies pruned. Returns the root.
 */
function referenceTree(msgs: readonly ThreadMessage[]): Container {
  const idTable = new Map<string, Container>();
  const all: Container[] = [];
  const lookup = (id: string): Container => {
    let c = idTable.get(id);
    if (!c) {
      // a dummy until (unless) a message with this id comes along
      c = container(null, Number.MAX_SAFE_INTEGER);
      idTable.set(id, c);
      all.push(c);
    }
    return c;
  };

  // (1) link every message to its references
  msgs.forEach((msg, seq) => {
    let self: Container;
    const id = parseMsgIds(msg.messageId)[0];
    const existing = id !== undefined ? idTable.get(id) : undefined;
    if (existing && !existing.msg) {
      // fills the dummy that earlier references created
      self = existing;
      self.msg = msg;
      self.seq = seq;
    } else {
      // no (valid) Message-ID, or a duplicate of an earlier message's: a unique id of its own
      self = container(msg, seq);
      all.push(self);
      if (id !== undefined && !existing) idTable.set(id, self);
    }
    const refs = messageReferences(msg).map(lookup);
    // (1A) each reference is the parent of the next, unless that one has a parent
    // already (References may have been truncated) or the link would make a loop
    for (let i = 0; i + 1 < refs.length; i++) {
      const parent = refs[i]!;
      const child = refs[i + 1]!;
      if (!child.parent && !isDescendant(parent, child)) link(parent, child);
    }
    // (1B) the last reference is the parent of this message. Any parent it got from other
    // messages' references goes first, even when the new link is then refused as a loop
    // (as Dovecot reads the RFC): no reference, or a loop, leaves it without a parent
    unlink(self);
    const last = refs[refs.length - 1];
    if (last && !isDescendant(last, self)) link(last, self);
  });

  // (2) everything without a parent is a child of the root
  const root = container(null, -1);
  for (const c of all) if (!c.parent) root.children.push(c);

  // (3) prune dummies
  root.children = root.children.flatMap((c) => prune(c, true));
  for (const c of root.children) c.parent = root;
  return root;
}

/** Sorts every sibling set by sent date, deepest first (RFC 5256 §3 step 6). */
function sortTree(c: Container): void {
  for (const k of c.children) sortTree(k);
  c.children.sort(byDate);
}

function toNode(c: Container): ThreadNode {
  return { n: c.msg?.n ?? null, children: c.children.map(toNode) };
}

/**
 * THREAD=REFERENCES, RFC 5256 §3, step by step. `msgs` are the searched messages in
 * sequence order. Returns the top-level threads, each sibling set sorted by sent date.
 */
export function threadReferences(msgs: readonly ThreadMessage[]): ThreadNode[] {
  const root = referenceTree(msgs);

  // (4) sort the top level by sent date (a dummy by its earliest child)
  for (const c of root.children) if (!c.msg) c.children.sort(byDate);
  root.children.sort(byDate);

  // (5) gather threads with the same base subject. (5B) a dummy goes by its first child;
  // (5C) the subject table prefers a dummy, then a message that is not a reply
  for (const c of root.children) {
    const s = extractSubject(sortKey(c).msg?.subject ?? '');
    c.base = s.base;
    c.isReply = c.msg ? s.isReply : false;
  }
  const subjects = new Map<string, Container>();
  for (const c of root.children) {
    if (!c.base) continue;
    const old = subjects.get(c.base);
    if (!old || (!c.msg && old.msg) || (old.isReply && !c.isReply)) subjects.set(c.base, c);
  }
  // (5D) merge, walking a copy: merging moves messages off the top level
  const top: Container[] = [];
  for (const c of [...root.children]) {
    const t = c.base ? subjects.get(c.base) : undefined;
    if (!t || t === c) {
      top.push(c);
    } else if (!t.msg && !c.msg) {
      // both dummies: the children become siblings under the table's dummy
      for (const k of [...c.children]) link(t, k);
    } else if (!t.msg || (c.isReply && !t.isReply)) {
      link(t, c);
    } else {
      // neither heads the other's thread: both go under a new dummy, which takes the
      // table message's place in the table and at the top level. The table message is
      // always met before this happens, so it is in `top` already.
      const d = container(null, Number.MAX_SAFE_INTEGER);
      d.base = t.base;
      const at = top.indexOf(t);
      if (at >= 0) top[at] = d;
      else top.push(d);
      link(d, t);
      link(d, c);
      d.parent = root;
      subjects.set(t.base, d);
    }
  }
  root.children = top;

  // (6) sort every sibling set, deepest first
  sortTree(root);
  return root.children.map(toNode);
}

// --- REFS -----------------------------------------------------------------------------

/**
 * THREAD=REFS (draft-ietf-morg-inthread §4): the tree of REFERENCES steps (1) to (3)
 * without gathering threads by subject (a new conversation that reuses a subject stays
 * apart), and the threads ordered by their most recent message, so the thread that was
 * last active comes last. Siblings are sorted by sent date as in REFERENCES; threads
 * whose latest dates tie go by their first message, a thread whose head is missing first
 * (as Dovecot orders them).
 */
export function threadRefs(msgs: readonly ThreadMessage[]): ThreadNode[] {
  const root = referenceTree(msgs);
  sortTree(root);
  const latest = (c: Container): number =>
    c.children.reduce((max, k) => Math.max(max, latest(k)), c.msg?.date ?? -Infinity);
  const keyed = root.children.map((c) => ({ c, latest: latest(c), head: c.msg && !c.promoted ? c.seq : -1 }));
  keyed.sort((a, b) => a.latest - b.latest || a.head - b.head || sortKey(a.c).seq - sortKey(b.c).seq);
  return keyed.map(({ c }) => toNode(c));
}

// --- ORDEREDSUBJECT ---------------------------------------------------------------

/**
 * THREAD=ORDEREDSUBJECT, RFC 5256 §3: messages with the same base subject form a
 * thread; the earliest is its head and every later one is a child of the head (no
 * grandchildren); threads are ordered by their head's sent date.
 */
export function threadOrderedSubject(msgs: readonly ThreadMessage[]): ThreadNode[] {
  const rows = msgs.map((m, seq) => ({ m, seq, base: extractSubject(m.subject ?? '').base }));
  rows.sort((a, b) => a.m.date - b.m.date || a.seq - b.seq);
  const threads = new Map<string, ThreadNode>();
  const out: ThreadNode[] = [];
  for (const r of rows) {
    const head = threads.get(r.base);
    if (head) head.children.push({ n: r.m.n, children: [] });
    else {
      const node: ThreadNode = { n: r.m.n, children: [] };
      threads.set(r.base, node);
      out.push(node);
    }
  }
  return out;
}

export function thread(algorithm: ThreadAlgorithm, msgs: readonly ThreadMessage[]): ThreadNode[] {
  switch (algorithm) {
    case 'REFERENCES':
      return threadReferences(msgs);
    case 'REFS':
      return threadRefs(msgs);
    case 'ORDEREDSUBJECT':
      return threadOrderedSubject(msgs);
  }
}

// --- response (RFC 5256 §4) -----------------------------------------------------------

// thread-list    = "(" (thread-members / thread-nested) ")"
// thread-members = nz-number *(SP nz-number) [SP thread-nested]
// thread-nested  = 2*thread-list
function members(node: ThreadNode): string {
  const parts: string[] = [];
  let c = node;
  for (;;) {
    if (c.n !== null) parts.push(String(c.n));
    if (c.children.length !== 1) break;
    c = c.children[0]!;
  }
  if (c.children.length > 1) parts.push(c.children.map((k) => `(${members(k)})`).join(''));
  return parts.join(' ');
}

/** `(1 2)(3 (4)(5))`: the data of `* THREAD`, empty for no messages. */
export function renderThreads(threads: readonly ThreadNode[]): string {
  return threads.map((t) => `(${members(t)})`).join('');
}
