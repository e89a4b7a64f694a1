// The message list, virtually scrolled: the server says how many rows there are, the list
// is as tall as all of them, and only the pages of 50 around what is on screen are fetched
// and drawn. A folder of 10,000 messages costs what one of 50 does.
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { api, type Row } from './api.ts';
import { DRAG_TYPE } from './folders.tsx';
import { displayName, formatDate, formatSize } from './format.ts';
import { Icon } from './icons.tsx';

/** The longest list of messages on their way out that a read tells the API (its limit on `exclude`). */
const MAX_EXCLUDE_CHARS = 4000;

export const PAGE = 50;

export interface ListQuery {
  folder: string;
  sort: string;
  order: string;
  q: string;
  threads: boolean;
  unread: boolean;
}

export interface ListState {
  key: string;
  total: number | null;
  pages: Map<number, Row[]>;
  error: string | null;
}

const keyOf = (q: ListQuery) => JSON.stringify(q);

type FlagName = 'seen' | 'flagged';
const FLAG_NAMES: FlagName[] = ['seen', 'flagged'];
const changeKey = (folder: string, uid: number, name: FlagName) => `${folder}\n${uid}\n${name}`;

/** A flag set (or cleared) here: on its way to the server, or answered. */
interface FlagChange {
  on: boolean;
  /** The page reads asked for before the server answered (their number); null while on its way. */
  answered: number | null;
}

/**
 * The loaded rows by their place once `uids` are taken out (each row after one taken out
 * moves up a place), and how many loaded rows were taken out.
 */
function afterDrop(pages: Map<number, Row[]>, uids: number[]): { rows: Map<number, Row>; removed: number } {
  const gone = new Set(uids);
  const rows = new Map<number, Row>();
  let removed = 0;
  for (const [p, page] of [...pages.entries()].sort(([a], [b]) => a - b))
    page.forEach((r, i) => {
      if (gone.has(r.uid)) removed++;
      else rows.set(p * PAGE + i - removed, r);
    });
  return { rows, removed };
}

/** Pages of the list for a query; `refresh` fetches the loaded pages again (new mail, a move). */
export function useMessageList(q: ListQuery) {
  const key = keyOf(q);
  const [state, setState] = useState<ListState>({ key, total: null, pages: new Map(), error: null });
  const loading = useRef(new Set<number>());
  const current = useRef(key);
  current.current = key;
  /**
   * How many times rows were taken out (drop). A page read before may still hold them, the
   * server not having moved them yet: it is not shown (the rows would come back, and the
   * keyboard act on the wrong one). Every drop is followed by a refresh once the server has
   * answered, which reads the pages again.
   */
  const drops = useRef(0);
  /**
   * The moves on their way, by folder: the pages read meanwhile are read without their rows
   * (the server may not have moved them yet, and a row shown again would put the keyboard
   * on the wrong one), the places counted as the list shows them.
   */
  const moving = useRef(new Map<string, Set<number[]>>());
  /** The number of the newest read taken, by page: an answer to an older read comes too late. */
  const newest = useRef(new Map<number, number>());
  /** Page reads asked for so far (a read's number), and those on their way. */
  const reads = useRef(0);
  const reading = useRef(new Set<number>());
  /**
   * Flags changed here, by folder, uid and name. A page read asked for before the server
   * answered may come back after, with the flags as they were: the change is shown over it.
   * A read asked for after the answer shows the server's flags (another client's change made
   * since included); once no read from before is on its way, the change is forgotten.
   */
  const flagChanges = useRef(new Map<string, FlagChange>());
  const folderNow = useRef(q.folder);
  folderNow.current = q.folder;

  const forgetAnswered = () => {
    const oldest = Math.min(...reading.current);
    for (const [k, c] of flagChanges.current)
      if (c.answered !== null && c.answered < oldest) flagChanges.current.delete(k);
  };

  /** A row of a page read (number `read`) with the flags changed here that it may not show yet. */
  const withChanges = (folder: string, r: Row, read: number): Row => {
    let flags = r.flags;
    for (const name of FLAG_NAMES) {
      const c = flagChanges.current.get(changeKey(folder, r.uid, name));
      if (c && (c.answered === null || read <= c.answered) && flags[name] !== c.on)
        flags = { ...flags, [name]: c.on };
    }
    return flags === r.flags ? r : { ...r, flags };
  };

  const load = useCallback(
    async (page: number, force = false) => {
      const k = key;
      if (loading.current.has(page) && !force) return;
      loading.current.add(page);
      const dropsBefore = drops.current;
      const read = ++reads.current;
      reading.current.add(read);
      // a move of many messages (a whole folder selected) is not told: its list would pass
      // the API's limit and every read fail; its rows may then show until it has ended
      const moved = [...(moving.current.get(q.folder) ?? [])].flat().join(',');
      const exclude = moved.length <= MAX_EXCLUDE_CHARS ? moved : '';
      try {
        const res = await api.list({
          ...q,
          offset: page * PAGE,
          limit: PAGE,
          exclude: exclude || undefined,
        });
        if (current.current !== k || drops.current !== dropsBefore) return;
        if ((newest.current.get(page) ?? 0) > read) return;
        newest.current.set(page, read);
        const rows = flagChanges.current.size
          ? res.rows.map((r) => withChanges(q.folder, r, read))
          : res.rows;
        setState((s) => {
          const pages = new Map(s.key === k ? s.pages : []);
          pages.set(page, rows);
          return { key: k, total: res.total, pages, error: null };
        });
      } catch (err) {
        if (current.current === k) setState((s) => ({ ...s, key: k, error: (err as Error).message }));
      } finally {
        loading.current.delete(page);
        reading.current.delete(read);
        forgetAnswered();
      }
    },
    // one query per key: q has the same content whenever key is the same
    [key],
  );

  useEffect(() => {
    loading.current.clear();
    newest.current.clear();
    setState({ key, total: null, pages: new Map(), error: null });
    void load(0);
  }, [key, load]);

  const ensure = useCallback(
    (first: number, last: number) => {
      for (let p = Math.floor(first / PAGE); p <= Math.floor(last / PAGE); p++) {
        if (!state.pages.has(p) && state.key === key) void load(p);
      }
    },
    [state, key, load],
  );

  const refresh = useCallback(() => {
    const pages = state.key === key && state.pages.size ? [...state.pages.keys()] : [0];
    for (const p of pages) void load(p, true);
  }, [state, key, load]);

  /** Sets a flag on the rows loaded, of this list's folder. */
  const patch = (folder: string, flags: Map<number, boolean>, name: FlagName) => {
    if (folderNow.current !== folder) return;
    setState((s) => {
      const pages = new Map(s.pages);
      for (const [p, rows] of pages)
        pages.set(
          p,
          rows.map((r) => (flags.has(r.uid) ? { ...r, flags: { ...r.flags, [name]: flags.get(r.uid) } } : r)),
        );
      return { ...s, pages };
    });
  };

  /**
   * Shows a flag set (or cleared) on rows at once, before the server's answer; returns what
   * to call with the answer. Until a page read asked for after it comes back, the change is
   * shown over what reads from before say. When the server did not set it, the rows show
   * what they did before.
   */
  const setFlag = useCallback(
    (uids: number[], name: FlagName, on: boolean) => {
      const folder = q.folder;
      const change: FlagChange = { on, answered: null };
      const was = new Map<number, boolean>();
      for (const page of state.key === key ? state.pages.values() : [])
        for (const r of page) if (uids.includes(r.uid)) was.set(r.uid, r.flags[name]);
      for (const uid of uids) flagChanges.current.set(changeKey(folder, uid, name), change);
      patch(folder, new Map(uids.map((uid) => [uid, on])), name);
      return (ok: boolean) => {
        if (ok) change.answered = reads.current;
        else {
          const back = new Map<number, boolean>();
          for (const uid of uids) {
            const k = changeKey(folder, uid, name);
            // a later change of the same flag is left to its own answer
            if (flagChanges.current.get(k) !== change) continue;
            flagChanges.current.delete(k);
            if (was.has(uid)) back.set(uid, was.get(uid)!);
          }
          patch(folder, back, name);
        }
        forgetAnswered();
      };
    },
    [state, key],
  );

  /**
   * Takes rows out at once (moved, deleted): every row after one taken out moves up a place.
   * A page that then has a place whose row is not loaded (the pages loaded need not follow
   * each other: a long folder scrolled far down) is left out, to be fetched again when in
   * view, rather than shown with rows that are not its own. Until the server's answer (to
   * pass to what is returned: moved or not), the pages read leave the rows out; when they
   * were not moved, the refresh that follows shows them again.
   */
  const drop = useCallback((uids: number[]) => {
    drops.current++;
    // the reads on their way are not taken: a page left out is read again when in view
    loading.current.clear();
    const folder = folderNow.current;
    const inFolder = moving.current.get(folder) ?? new Set();
    moving.current.set(folder, inFolder.add(uids));
    setState((s) => {
      const { rows, removed } = afterDrop(s.pages, uids);
      const total = s.total === null ? null : s.total - removed;
      const pages = new Map<number, Row[]>();
      for (const p of new Set([...rows.keys()].map((i) => Math.floor(i / PAGE)))) {
        const end = Math.min((p + 1) * PAGE, total ?? Infinity);
        const page: Row[] = [];
        for (let i = p * PAGE; i < end && rows.has(i); i++) page.push(rows.get(i)!);
        if (page.length === end - p * PAGE) pages.set(p, page);
      }
      return { ...s, pages, total };
    });
    return (moved: boolean) => {
      inFolder.delete(uids);
      if (!inFolder.size) moving.current.delete(folder);
      // the pages read meanwhile lack rows the server still has: only a read from now on counts
      if (!moved) drops.current++;
    };
  }, []);

  /**
   * Where the row at `index` goes once `uids` are taken out (drop): the row that follows it
   * in its place, else the one before it; null when no loaded row is left.
   */
  const nextAfterDrop = (uids: number[], index: number): { uid: number; index: number } | null => {
    const { rows } = afterDrop(state.pages, uids);
    const gone = new Set(uids);
    const before = [...state.pages.entries()]
      .flatMap(([p, page]) => page.map((r, i) => ({ r, i: p * PAGE + i })))
      .filter(({ r, i }) => i < index && gone.has(r.uid)).length;
    const at = index - before;
    for (const i of [at, at - 1]) {
      const r = rows.get(i);
      if (r) return { uid: r.uid, index: i };
    }
    return null;
  };

  const rowAt = (i: number): Row | undefined => state.pages.get(Math.floor(i / PAGE))?.[i % PAGE];
  return { state, ensure, refresh, setFlag, drop, nextAfterDrop, rowAt };
}

export type MessageListApi = ReturnType<typeof useMessageList>;

export function MessageList(props: {
  list: MessageListApi;
  folder: string;
  selected: number | null;
  /** Rows ticked for an action on several (by their uid). */
  checked: ReadonlySet<number>;
  sentFolder: boolean;
  onSelect: (uid: number, index: number) => void;
  /** Ticks (or unticks) a row; `range`: every row from the last one ticked to this one too. */
  onCheck: (uid: number, index: number, on: boolean, range: boolean) => void;
  /** What dragging a row moves: the selection when the row is in it. */
  dragged: (uid: number) => number[];
  onOpen: (uid: number) => void;
  rowHeight: number;
}) {
  const { list } = props;
  const ref = useRef<HTMLDivElement>(null);
  const [view, setView] = useState({ top: 0, height: 600 });
  const total = list.state.total ?? 0;
  const rh = props.rowHeight;

  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    const measure = () => setView({ top: el.scrollTop, height: el.clientHeight });
    measure();
    const ro = new ResizeObserver(measure);
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  // a new folder or search starts at the top
  useEffect(() => {
    if (ref.current) ref.current.scrollTop = 0;
  }, [list.state.key]);

  const first = Math.max(0, Math.floor(view.top / rh) - 10);
  const last = Math.min(total - 1, Math.ceil((view.top + view.height) / rh) + 10);
  useEffect(() => {
    if (total) list.ensure(first, last);
  }, [first, last, total, list]);

  // keep the selected row in view when the keyboard moves it; and when the focus was lost
  // (the focused row or the message open was moved away), give it to the row selected now,
  // once drawn (its page may be read again first)
  let selectedDrawn = false;
  for (let i = first; i <= last && !selectedDrawn; i++) selectedDrawn = list.rowAt(i)?.uid === props.selected;
  useEffect(() => {
    const el = ref.current;
    if (!el || props.selected === null) return;
    const row = el.querySelector<HTMLElement>(`[data-uid="${props.selected}"]`);
    const focus = document.activeElement;
    if (row && (!focus || focus === document.body || el.contains(focus))) row.focus({ preventScroll: false });
  }, [props.selected, selectedDrawn]);

  const items = [];
  for (let i = first; i <= last; i++) {
    const r = list.rowAt(i);
    const top = i * rh;
    if (!r) {
      items.push(
        <div
          key={`p${i}`}
          class="row placeholder"
          style={{ transform: `translateY(${top}px)`, height: `${rh}px` }}
          aria-hidden="true"
        />,
      );
      continue;
    }
    const who = props.sentFolder ? (r.to[0] ? `To: ${displayName(r.to[0])}` : '') : displayName(r.from);
    const unread = r.thread ? r.thread.unread > 0 : !r.flags.seen;
    const selected = r.uid === props.selected;
    const checked = props.checked.has(r.uid);
    const subject = r.subject || '(no subject)';
    const focusable = selected || (props.selected === null && i === 0);
    items.push(
      <div
        key={r.uid}
        role="option"
        id={`msg-${r.uid}`}
        data-uid={r.uid}
        aria-selected={selected}
        aria-checked={checked}
        aria-setsize={total}
        aria-posinset={i + 1}
        aria-label={`${unread ? 'Unread, ' : ''}${r.flags.flagged ? 'flagged, ' : ''}${who}, ${subject}, ${formatDate(r.date)}`}
        tabIndex={focusable ? 0 : -1}
        class={`row${unread ? ' unread' : ''}${selected ? ' selected' : ''}${checked ? ' checked' : ''}`}
        style={{ transform: `translateY(${top}px)`, height: `${rh}px` }}
        draggable
        onDragStart={(e) => {
          const uids = props.dragged(r.uid);
          e.dataTransfer?.setData(DRAG_TYPE, JSON.stringify({ folder: props.folder, uids }));
          if (e.dataTransfer) e.dataTransfer.effectAllowed = 'move';
        }}
        onClick={(e) => {
          // Ctrl/Cmd-click ticks one more, Shift-click a range, as in a file manager
          if (e.ctrlKey || e.metaKey || e.shiftKey) {
            props.onCheck(r.uid, i, e.shiftKey || !checked, e.shiftKey);
            return;
          }
          props.onSelect(r.uid, i);
          props.onOpen(r.uid);
        }}
        onKeyDown={(e) => {
          if (e.key === 'Enter' || e.key === ' ') {
            e.preventDefault();
            props.onOpen(r.uid);
          }
        }}
      >
        <input
          type="checkbox"
          class="row-check"
          checked={checked}
          tabIndex={focusable ? 0 : -1}
          aria-label={`Select: ${subject}`}
          onClick={(e) => {
            e.stopPropagation();
            props.onCheck(r.uid, i, e.currentTarget.checked, e.shiftKey);
          }}
          // Space ticks the box; the row would open the message
          onKeyDown={(e) => {
            if (e.key === ' ') e.stopPropagation();
          }}
        />
        <span class="who">{who || '(unknown sender)'}</span>
        <span class="date">{formatDate(r.date)}</span>
        <span class="subject">
          {r.thread && r.thread.count > 1 && (
            <span class="thread-count" aria-label={`${r.thread.count} messages`}>
              {r.thread.count}
            </span>
          )}
          {subject}
        </span>
        <span class="marks" aria-hidden="true">
          {r.attachment && <Icon name="clip" />}
          {r.flags.answered && <Icon name="reply" />}
          {r.flags.flagged && <Icon name="star" class="flag" filled />}
          <span class="size">{formatSize(r.size)}</span>
        </span>
      </div>,
    );
  }

  return (
    <div
      class="list-scroll"
      ref={ref}
      onScroll={(e) => setView({ top: e.currentTarget.scrollTop, height: e.currentTarget.clientHeight })}
    >
      {list.state.error && (
        <p class="list-error" role="alert">
          {list.state.error}
        </p>
      )}
      {list.state.total === 0 && <p class="empty">No messages here.</p>}
      <div
        role="listbox"
        aria-label="Messages"
        aria-activedescendant={props.selected !== null ? `msg-${props.selected}` : undefined}
        class="list-space"
        style={{ height: `${total * rh}px` }}
      >
        {items}
      </div>
    </div>
  );
}
