import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import {
  api,
  onCsrfRefused,
  onSessionEnd,
  setCsrf,
  type ActionResult,
  type ApiError,
  type DraftBody,
  type Folder,
  type FolderEvent,
  type Message,
} from './api.ts';
import { AccountPage } from './account.tsx';
import { AdminPage } from './admin.tsx';
import { BulkBar, type BulkAction } from './bulk-bar.tsx';
import { Compose } from './compose.tsx';
import { FolderList } from './folders.tsx';
import { emptyDraft, folderLabel, forwardDraft, replyDraft } from './format.ts';
import { Icon } from './icons.tsx';
import { Login, SignInAgain } from './login.tsx';
import { MessageList, useMessageList, type ListQuery } from './message-list.tsx';
import { Reader, type ReaderAction } from './reader.tsx';

type Screen =
  | { kind: 'loading' }
  | { kind: 'login'; notice?: string; secondFactorFor?: string }
  | { kind: 'mail'; account: string; attachmentLimit: number }
  | { kind: 'account'; account: string; attachmentLimit: number }
  | { kind: 'admin'; account: string; attachmentLimit: number };

/** The least time between two openings of the event stream after it ended (ms). */
const STREAM_REOPEN_MS = 10_000;

/** A reload or a link on an admin page (#admin=...) opens the console again. */
const adminInHash = () => new URLSearchParams(location.hash.slice(1)).has('admin');

/** Why the session ended; a new one for each refusal, so that the login over the editor shows again. */
export interface SessionEnd {
  why: string;
}

export function App() {
  const [screen, setScreen] = useState<Screen>({ kind: 'loading' });
  /**
   * The session ended while a message was being written: the editor stays, with a login
   * over it (other views go to the login page, where nothing is lost).
   */
  const [ended, setEnded] = useState<SessionEnd | null>(null);
  const writing = useRef(false);
  const endedNow = useRef(ended);
  endedNow.current = ended;

  const screenNow = useRef(screen);
  screenNow.current = screen;

  useEffect(() => {
    onSessionEnd((why) => {
      if (writing.current) setEnded({ why });
      else setScreen({ kind: 'login', notice: why });
    });
    // While a message is being written, a refused token may only mean that another tab logged
    // in again: the same account's new token lets the save go on; another account, or none,
    // gets the login over the editor, as a session that ended does.
    onCsrfRefused(async () => {
      const shown = screenNow.current;
      if (!writing.current || !('account' in shown)) return false;
      const s = await api.session().catch(() => null);
      if (s?.authenticated && s.account === shown.account) {
        setCsrf(s.csrf ?? '');
        return true;
      }
      setEnded({
        why: s?.authenticated
          ? `This browser is now logged in as ${s.account ?? 'another account'}`
          : 'Your session has ended',
      });
      return false;
    });
    api.session().then(
      (s) => {
        if (s.authenticated) {
          setCsrf(s.csrf ?? '');
          setScreen({
            kind: adminInHash() ? 'admin' : 'mail',
            account: s.account!,
            attachmentLimit: s.limits?.attachments ?? 0,
          });
        } else if (s.next === 'second-factor') {
          setCsrf(s.csrf ?? '');
          setScreen({ kind: 'login', secondFactorFor: s.account ?? '' });
        } else setScreen({ kind: 'login' });
      },
      () => setScreen({ kind: 'login', notice: 'The server cannot be reached; try again shortly' }),
    );
  }, []);

  switch (screen.kind) {
    case 'loading':
      return (
        <p class="loading" role="status">
          Loading…
        </p>
      );
    case 'login':
      return (
        <Login
          notice={screen.notice}
          secondFactorFor={screen.secondFactorFor}
          onDone={(s) =>
            setScreen({ kind: 'mail', account: s.account!, attachmentLimit: s.limits?.attachments ?? 0 })
          }
        />
      );
    case 'mail':
      return (
        <Mail
          account={screen.account}
          attachmentLimit={screen.attachmentLimit}
          ended={ended}
          onSignedInAgain={() => setEnded(null)}
          onWriting={(open) => {
            writing.current = open;
            // the editor closed (discarded) after its session ended: the login page
            const gone = endedNow.current;
            if (!open && gone) {
              setEnded(null);
              setScreen({ kind: 'login', notice: gone.why });
            }
          }}
          onLoggedOut={() => setScreen({ kind: 'login', notice: 'You are logged out.' })}
          onAccount={() => setScreen({ ...screen, kind: 'account' })}
          onAdmin={() => setScreen({ ...screen, kind: 'admin' })}
        />
      );
    case 'admin':
      return <AdminPage account={screen.account} onBack={() => setScreen({ ...screen, kind: 'mail' })} />;
    case 'account':
      return (
        <AccountPage
          account={screen.account}
          onBack={() => setScreen({ ...screen, kind: 'mail' })}
          onSignedOut={() => setScreen({ kind: 'login', notice: 'You are signed out everywhere.' })}
        />
      );
  }
}

/** The folder in the address (#folder=...), so a reload or a link keeps it. */
const folderFromHash = () => new URLSearchParams(location.hash.slice(1)).get('folder') ?? 'INBOX';

interface ComposeState {
  draft: DraftBody;
  files: { name: string; size: number }[];
  key: number;
}

const isTyping = (t: EventTarget | null) =>
  t instanceof HTMLElement &&
  (t.isContentEditable ||
    /^(TEXTAREA|SELECT)$/.test(t.tagName) ||
    // a ticked box keeps the focus, and the shortcuts then act on the selection
    (t instanceof HTMLInputElement && t.type !== 'checkbox'));

function useMedia(query: string): boolean {
  const [match, setMatch] = useState(() => window.matchMedia(query).matches);
  useEffect(() => {
    const mq = window.matchMedia(query);
    const on = () => setMatch(mq.matches);
    mq.addEventListener('change', on);
    return () => mq.removeEventListener('change', on);
  }, [query]);
  return match;
}

function Mail(props: {
  account: string;
  attachmentLimit: number;
  /** The session ended while a message was being written. */
  ended: SessionEnd | null;
  /** Logged in again, as the same account. */
  onSignedInAgain: () => void;
  /** The editor opened or closed. */
  onWriting: (open: boolean) => void;
  onLoggedOut: () => void;
  onAccount: () => void;
  onAdmin: () => void;
}) {
  const [folders, setFolders] = useState<Folder[]>([]);
  const [folder, setFolder] = useState(folderFromHash);
  const [search, setSearch] = useState('');
  const [q, setQ] = useState('');
  const [sort, setSort] = useState('arrival');
  const [threads, setThreads] = useState(false);
  const [unreadOnly, setUnreadOnly] = useState(false);
  const [selected, setSelected] = useState<{ uid: number; index: number } | null>(null);
  const [open, setOpen] = useState<Message | null>(null);
  const [openThread, setOpenThread] = useState<number[]>([]);
  const [compose, setCompose] = useState<ComposeState | null>(null);
  const writing = compose !== null;
  useEffect(() => props.onWriting(writing), [writing]);
  useEffect(() => () => props.onWriting(false), []);
  /** The login over the editor, put aside with "Not now" until the next refusal. */
  const [later, setLater] = useState<SessionEnd | null>(null);
  /** Counts the logins again: the event stream opens again with each. */
  const [login, setLogin] = useState(0);
  const [identities, setIdentities] = useState<string[]>([props.account]);
  const [toast, setToast] = useState<string>('');
  /** A notice that stays until dismissed: what the user must not miss (recipients not reached). */
  const [toastStays, setToastStays] = useState(false);
  const [drawer, setDrawer] = useState(false);
  const [help, setHelp] = useState(false);
  // the Admin entry, for accounts with the admin role only (the console's routes check it again)
  const [isAdmin, setIsAdmin] = useState(false);
  useEffect(() => {
    api.account().then(
      (a) => setIsAdmin(a.admin),
      () => undefined,
    );
  }, []);
  const phone = useMedia('(max-width: 720px)');
  const searchBox = useRef<HTMLInputElement>(null);

  const query: ListQuery = useMemo(
    () => ({
      folder,
      sort: sort.replace(/-asc$/, ''),
      order: sort.endsWith('-asc') ? 'asc' : 'desc',
      q,
      threads,
      unread: unreadOnly,
    }),
    [folder, sort, q, threads, unreadOnly],
  );
  const list = useMessageList(query);

  // the rows ticked for an action on several; a row whose message went (moved, another
  // folder or search) is no longer ticked
  const [checked, setChecked] = useState<ReadonlySet<number>>(new Set());
  const lastChecked = useRef<number | null>(null);
  const loadedRows = useMemo(
    () => [...list.state.pages.entries()].sort(([a], [b]) => a - b).flatMap(([, rows]) => rows),
    [list.state.pages],
  );
  useEffect(() => {
    setChecked((prev) => {
      if (!prev.size) return prev;
      const here = new Set(loadedRows.map((r) => r.uid));
      const next = new Set([...prev].filter((u) => here.has(u)));
      return next.size === prev.size ? prev : next;
    });
  }, [loadedRows]);
  const check = (uid: number, index: number, on: boolean, range: boolean) => {
    const from = range && lastChecked.current !== null ? lastChecked.current : index;
    const rows: number[] = [];
    for (let i = Math.min(from, index); i <= Math.max(from, index); i++) {
      const r = list.rowAt(i);
      if (r) rows.push(r.uid);
    }
    if (!rows.includes(uid)) rows.push(uid);
    setChecked((prev) => {
      const next = new Set(prev);
      for (const u of rows)
        if (on) next.add(u);
        else next.delete(u);
      return next;
    });
    lastChecked.current = index;
  };
  const checkAll = (on: boolean) => {
    setChecked(new Set(on ? loadedRows.map((r) => r.uid) : []));
    lastChecked.current = null;
  };
  /** The messages of ticked rows (a conversation's row stands for all of its messages). */
  const checkedUids = () =>
    loadedRows.filter((r) => checked.has(r.uid)).flatMap((r) => r.thread?.uids ?? [r.uid]);

  const say = useCallback((text: string, stays = false) => {
    setToast(text);
    setToastStays(stays);
    if (!stays) window.setTimeout(() => setToast((t) => (t === text ? '' : t)), 5000);
  }, []);

  const loadFolders = useCallback(
    (pushed = false) => {
      api.folders().then(
        (r) => {
          setFolders(r.folders);
          if (pushed) openGone.current(r.folders);
        },
        (err: ApiError) => say(err.message),
      );
    },
    [say],
  );
  /**
   * After a change pushed from elsewhere: the open folder no longer there (renamed or
   * deleted while this tab did not hear of it, its stream reconnecting) is left for
   * Inbox, rather than shown as an error until the user picks another.
   */
  const openGone = useRef((_: Folder[]) => undefined as void);

  // the folders (with counts) once the list is on screen: one after the other, the
  // mail server reads the folder once, on one connection
  const listShown = list.state.total !== null || list.state.error !== null;
  const foldersAsked = useRef(false);
  useEffect(() => {
    if (!listShown || foldersAsked.current) return;
    foldersAsked.current = true;
    loadFolders();
  }, [listShown, loadFolders]);

  useEffect(() => {
    api.identities().then(
      (r) => setIdentities(r.identities.map((i) => i.address)),
      () => undefined,
    );
  }, [loadFolders]);

  useEffect(() => {
    const on = () => setFolder(folderFromHash());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);

  // new mail without reload: the server's IDLE session, pushed as events
  const refreshRef = useRef((_pushed?: boolean) => undefined as void);
  refreshRef.current = (pushed) => {
    list.refresh();
    loadFolders(pushed);
  };
  const folderEventRef = useRef((_e: FolderEvent) => undefined as void);
  folderEventRef.current = (e) => onFolderEvent(e);
  /** When the event stream was last opened. */
  const streamOpened = useRef(0);
  useEffect(() => {
    const es = new EventSource('/api/events');
    streamOpened.current = Date.now();
    let reopen: ReturnType<typeof setTimeout> | undefined;
    es.addEventListener('new', (e) => {
      const data = JSON.parse((e as MessageEvent<string>).data) as { folder: string };
      say(`New mail in ${data.folder === 'INBOX' ? 'Inbox' : data.folder}`);
      refreshRef.current();
    });
    es.addEventListener('changed', () => refreshRef.current());
    es.addEventListener('folder', (e) =>
      folderEventRef.current(JSON.parse((e as MessageEvent<string>).data) as FolderEvent),
    );
    // events may have been missed meanwhile: the open folder may be gone
    es.addEventListener('reconnected', () => refreshRef.current(true));
    // The stream's session ended. The browser may hold a newer one of this account (a new
    // password renews it under a new id, in this tab or another): then the stream opens
    // again under it, else the next request finds the session gone. Never sooner than
    // STREAM_REOPEN_MS after the last opening: a stream refused for another reason (a
    // proxy that does not pass it) is not asked for again and again.
    const ended = () =>
      void api.session().then(
        (s) => {
          if (!s.authenticated || s.account !== props.account) return;
          const wait = Math.max(0, streamOpened.current + STREAM_REOPEN_MS - Date.now());
          reopen = setTimeout(() => setLogin((n) => n + 1), wait);
        },
        () => undefined,
      );
    es.addEventListener('logout', () => {
      es.close();
      ended();
    });
    es.onerror = () => {
      // closed for good (a 401): find out why
      if (es.readyState === EventSource.CLOSED) ended();
    };
    // logged in again: what changed meanwhile
    if (login) refreshRef.current();
    return () => {
      clearTimeout(reopen);
      es.close();
    };
  }, [say, login, props.account]);

  const specialOf = useCallback(
    (path: string) => folders.find((f) => f.path === path)?.specialUse ?? null,
    [folders],
  );
  const currentFolder = folders.find((f) => f.path === folder);

  const openFolder = (path: string) => {
    location.hash = `folder=${encodeURIComponent(path)}`;
    setFolder(path);
    setOpen(null);
    setSelected(null);
    setDrawer(false);
  };
  openGone.current = (now) => {
    if (folder === 'INBOX' || isOwn(folder) || now.some((f) => f.path === folder && f.selectable)) return;
    openFolder('INBOX');
    say(`Folder ${folder} is no longer there: showing Inbox`);
  };

  // --- folders of the user's own: made, renamed, deleted -----------------------------------

  const underOrIs = (path: string, f: Pick<Folder, 'path' | 'delimiter'>) =>
    path === f.path || (!!f.delimiter && path.startsWith(f.path + f.delimiter));

  /**
   * Folders this tab is renaming or deleting: the events of its own change (which come to
   * every tab) are no news to it, and its view moves when the change is made.
   */
  const ownChanges = useRef(new Set<Folder>());
  const ownChange = async (f: Folder, change: () => Promise<void>) => {
    ownChanges.current.add(f);
    try {
      await change();
    } finally {
      // the events may come just after the answer
      window.setTimeout(() => ownChanges.current.delete(f), 10_000);
    }
  };
  const isOwn = (path: string) => [...ownChanges.current].some((f) => underOrIs(path, f));

  /**
   * A folder made, renamed or deleted in another tab or another mail client: the folder
   * list follows (once for a burst: a folder deleted with those in it is one event each),
   * and so does the open folder, to its new name, or to Inbox when it is gone.
   */
  const folderReload = useRef(0);
  const onFolderEvent = (e: FolderEvent) => {
    window.clearTimeout(folderReload.current);
    folderReload.current = window.setTimeout(() => loadFolders(true), 150);
    if (e.change === 'created' || isOwn(e.from ?? e.folder)) return;
    const delimiter = folders.find((f) => f.delimiter)?.delimiter ?? '/';
    const gone = { path: e.from ?? e.folder, delimiter };
    if (!underOrIs(folder, gone)) return;
    if (e.change === 'renamed') {
      openFolder(e.folder + folder.slice(gone.path.length));
      say(`Folder ${gone.path} was renamed to ${e.folder} elsewhere`);
    } else {
      openFolder('INBOX');
      say(`Folder ${gone.path} was deleted elsewhere: showing Inbox`);
    }
  };

  const createFolder = async (name: string, parent: string) => {
    const res = await api.createFolder(name, parent || undefined);
    say(`Folder ${res.path ?? name} created`);
    loadFolders();
  };

  /** The open folder (or one inside it) renamed: the view follows it to its new name. */
  const renameFolder = async (f: Folder, name: string) => {
    await ownChange(f, async () => {
      const res = await api.renameFolder(f.path, name);
      const to = res.path ?? f.path;
      if (to !== f.path && underOrIs(folder, f)) openFolder(to + folder.slice(f.path.length));
    });
    say(`Folder renamed to ${name.trim()}`);
    loadFolders();
  };

  /** Asked first, with what goes with it; the open folder deleted: back to the inbox. */
  const deleteFolder = async (f: Folder) => {
    const gone = folders.filter((x) => underOrIs(x.path, f));
    const messages = gone.reduce((n, x) => n + x.total, 0);
    const inside = gone.length - 1;
    const what = [
      messages ? `its ${messages} message${messages === 1 ? '' : 's'}` : '',
      inside ? `the ${inside} folder${inside === 1 ? '' : 's'} in it` : '',
    ].filter(Boolean);
    const label = folderLabel(f);
    if (
      !window.confirm(
        `Delete the folder "${label}"${what.length ? ` and ${what.join(' and ')}` : ''}? This cannot be undone.`,
      )
    )
      return;
    try {
      await ownChange(f, async () => {
        await api.deleteFolder(f.path);
        if (underOrIs(folder, f)) openFolder('INBOX');
      });
      say(`Folder ${label} deleted`);
    } catch (err) {
      say((err as ApiError).message);
    }
    loadFolders();
  };

  const openMessage = async (uid: number, thread?: number[]) => {
    try {
      const m = await api.message(folder, uid);
      setOpen(m);
      const row = list.state.pages.size
        ? [...list.state.pages.values()].flat().find((r) => r.uid === uid)
        : undefined;
      setOpenThread(thread ?? row?.thread?.uids ?? [uid]);
      if (!m.flags.seen) {
        await api.flags(folder, [uid], ['seen']);
        list.setFlag([uid], 'seen', true)(true);
        setFolders((fs) =>
          fs.map((f) => (f.path === folder ? { ...f, unseen: Math.max(0, f.unseen - 1) } : f)),
        );
      }
    } catch (err) {
      say((err as Error).message);
    }
  };

  const openDraft = async (uid: number) => {
    try {
      const d = await api.draft(folder, uid);
      setCompose({
        key: Date.now(),
        draft: {
          ...emptyDraft(d.from),
          ...d,
          attachments: d.attachments.map((a) => ({ folder, uid, part: a.part })),
          draftUid: uid,
        },
        files: d.attachments.map((a) => ({ name: a.filename, size: a.size })),
      });
    } catch (err) {
      say((err as Error).message);
    }
  };

  const moveAway = async (uids: number[], how: () => Promise<ActionResult>, done: string) => {
    // the selection moves on to the message that takes the place of the one moved away (the
    // next one, else the one before), as in Gmail and Roundcube: the next key acts on it
    if (selected && uids.includes(selected.uid)) setSelected(list.nextAfterDrop(uids, selected.index));
    const answered = list.drop(uids);
    if (open && uids.includes(open.uid)) setOpen(null);
    try {
      const res = await how();
      answered(true);
      const target = folders.find((f) => f.path === res.to);
      const skipped = res.skipped?.length ? ` (${res.skipped.length} no longer here)` : '';
      say(
        (res.deleted ? 'Deleted for good' : `${done}${target ? ` to ${folderLabel(target)}` : ''}`) + skipped,
      );
    } catch (err) {
      answered(false);
      say((err as Error).message);
    }
    list.refresh();
    loadFolders();
  };

  const act = async (a: ReaderAction, m: Message | null = open) => {
    const target = m ?? null;
    const uids = target ? [target.uid] : selected ? [selected.uid] : [];
    if (!uids.length) return;
    const mine = identities;
    switch (a) {
      case 'reply':
      case 'replyAll':
      case 'forward':
        if (!target) return;
        setCompose({
          key: Date.now(),
          draft:
            a === 'forward'
              ? forwardDraft(target, mine, props.account)
              : replyDraft(target, a === 'replyAll', mine, props.account),
          files:
            a === 'forward'
              ? target.attachments.filter((x) => !x.inline).map((x) => ({ name: x.filename, size: x.size }))
              : [],
        });
        return;
      case 'editDraft':
        if (target) await openDraft(target.uid);
        return;
      case 'archive':
        return moveAway(uids, () => api.archive(folder, uids), 'Archived');
      case 'delete':
        return moveAway(uids, () => api.remove(folder, uids), 'Moved');
      case 'spam':
        return moveAway(uids, () => api.spam(folder, uids, true), 'Marked as spam and moved');
      case 'notSpam':
        return moveAway(uids, () => api.spam(folder, uids, false), 'Marked as not spam and moved');
      // the list and the message show a flag once the server has set it: a star shown for a
      // request that failed (the store down, the message moved away by another client) lies
      case 'unread': {
        try {
          await api.flags(folder, uids, [], ['seen']);
        } catch (err) {
          say((err as Error).message);
          return;
        }
        list.setFlag(uids, 'seen', false)(true);
        if (open) setOpen(null);
        loadFolders();
        return;
      }
      case 'flag': {
        const row = [...list.state.pages.values()].flat().find((r) => r.uid === uids[0]);
        const on = !(target?.flags.flagged ?? row?.flags.flagged ?? false);
        try {
          await api.flags(folder, uids, on ? ['flagged'] : [], on ? [] : ['flagged']);
        } catch (err) {
          say((err as Error).message);
          return;
        }
        list.setFlag(uids, 'flagged', on)(true);
        if (target) setOpen({ ...target, flags: { ...target.flags, flagged: on } });
        return;
      }
    }
  };

  const move = (from: string, uids: number[], to: string) =>
    moveAway(uids, () => api.move(from, uids, to), 'Moved');

  /** An action on every ticked message, in one request; the selection is cleared. */
  const bulk = async (a: BulkAction | { to: string }) => {
    const uids = checkedUids();
    if (!uids.length) return;
    checkAll(false);
    const n = `${uids.length} message${uids.length === 1 ? '' : 's'}`;
    if (typeof a === 'object') return moveAway(uids, () => api.move(folder, uids, a.to), `Moved ${n}`);
    const flag = async (name: 'seen' | 'flagged', on: boolean, done: string) => {
      const answered = list.setFlag(uids, name, on);
      try {
        const res = await api.flags(folder, uids, on ? [name] : [], on ? [] : [name]);
        answered(true);
        say(`${done}${res.skipped.length ? ` (${res.skipped.length} no longer here)` : ''}`);
      } catch (err) {
        answered(false);
        say((err as Error).message);
      }
      list.refresh();
      loadFolders();
    };
    switch (a) {
      case 'read':
        return flag('seen', true, `Marked ${n} read`);
      case 'unread':
        return flag('seen', false, `Marked ${n} unread`);
      case 'flag':
        return flag('flagged', true, `Flagged ${n}`);
      case 'unflag':
        return flag('flagged', false, `Unflagged ${n}`);
      case 'archive':
        return moveAway(uids, () => api.archive(folder, uids), `Archived ${n}`);
      case 'delete':
        return moveAway(uids, () => api.remove(folder, uids), `Moved ${n}`);
      case 'spam':
        return moveAway(uids, () => api.spam(folder, uids, true), `Marked ${n} as spam and moved`);
      case 'notSpam':
        return moveAway(uids, () => api.spam(folder, uids, false), `Marked ${n} as not spam and moved`);
    }
  };

  // keyboard shortcuts (shown with ?); none while typing
  const keys = useRef<(e: KeyboardEvent) => void>(() => undefined);
  const pendingG = useRef(false);
  keys.current = (e: KeyboardEvent) => {
    if (e.ctrlKey || e.metaKey || e.altKey || isTyping(e.target) || compose) return;
    // Enter on a button or link presses it (a folder's options, a folder), never opens a message
    if (e.key === 'Enter' && e.target instanceof Element && e.target.closest('button, a[href]')) return;
    const total = list.state.total ?? 0;
    const go = (delta: number) => {
      const index = Math.min(total - 1, Math.max(0, (selected?.index ?? -1) + delta));
      const row = list.rowAt(index);
      if (row) {
        setSelected({ uid: row.uid, index });
        document.getElementById(`msg-${row.uid}`)?.focus();
      }
    };
    if (pendingG.current) {
      pendingG.current = false;
      const to = { i: '\\Inbox', s: '\\Sent', d: '\\Drafts', a: '\\Archive', j: '\\Junk', t: '\\Trash' }[
        e.key
      ];
      const f = to && folders.find((x) => x.specialUse === to);
      if (f) {
        e.preventDefault();
        openFolder(f.path);
      }
      return;
    }
    // with rows ticked (and no message open) the actions are for all of them
    const several = checked.size > 0 && !open;
    const allFlagged = loadedRows.filter((r) => checked.has(r.uid)).every((r) => r.flags.flagged);
    const byKey: Record<string, () => void> = {
      j: () => go(1),
      ArrowDown: () => go(1),
      k: () => go(-1),
      ArrowUp: () => go(-1),
      o: () => selected && void openMessage(selected.uid),
      Enter: () => selected && void openMessage(selected.uid),
      c: () => setCompose({ key: Date.now(), draft: emptyDraft(props.account), files: [] }),
      r: () => void act('reply'),
      a: () => void act('replyAll'),
      f: () => void act('forward'),
      e: () => void (several ? bulk('archive') : act('archive')),
      '#': () => void (several ? bulk('delete') : act('delete')),
      Delete: () => void (several ? bulk('delete') : act('delete')),
      '!': () => {
        const a = specialOf(folder) === '\\Junk' ? 'notSpam' : 'spam';
        void (several ? bulk(a) : act(a));
      },
      s: () => void (several ? bulk(allFlagged ? 'unflag' : 'flag') : act('flag')),
      U: () => void (several ? bulk('unread') : act('unread')),
      I: () => void (several && bulk('read')),
      x: () => {
        if (!selected) return;
        const row = list.rowAt(selected.index);
        if (row) check(row.uid, selected.index, !checked.has(row.uid), false);
      },
      u: () => setOpen(null),
      Escape: () =>
        help ? setHelp(false) : drawer ? setDrawer(false) : open ? setOpen(null) : checkAll(false),
      '/': () => searchBox.current?.focus(),
      '?': () => setHelp((h) => !h),
      g: () => {
        pendingG.current = true;
      },
    };
    const fn = byKey[e.key];
    if (fn) {
      e.preventDefault();
      fn();
    }
  };
  useEffect(() => {
    const on = (e: KeyboardEvent) => keys.current(e);
    document.addEventListener('keydown', on);
    return () => document.removeEventListener('keydown', on);
  }, []);

  const logout = async () => {
    await api.logout().catch(() => undefined);
    props.onLoggedOut();
  };

  const pane = open ? 'reader' : 'list';
  const sentFolder = specialOf(folder) === '\\Sent' || specialOf(folder) === '\\Drafts';

  return (
    <div class={`mail pane-${pane}${drawer ? ' drawer-open' : ''}${compose ? ' composing' : ''}`}>
      <a class="skip" href="#message-list">
        Skip to messages
      </a>
      <header class="topbar">
        <button class="menu" aria-label="Folders" aria-expanded={drawer} onClick={() => setDrawer((x) => !x)}>
          <Icon name="menu" />
        </button>
        <span class="brand">
          <Icon name="mail" class="brand-mark" />
          Mailyard
        </span>
        <form
          class="search"
          role="search"
          onSubmit={(e) => {
            e.preventDefault();
            setQ(search.trim());
            setOpen(null);
          }}
        >
          <label for="search" class="sr-only">
            Search mail
          </label>
          <input
            id="search"
            ref={searchBox}
            type="search"
            placeholder="Search (from:, subject:, is:unread)"
            value={search}
            onInput={(e) => {
              setSearch(e.currentTarget.value);
              if (!e.currentTarget.value) setQ('');
            }}
          />
        </form>
        <button
          class="primary compose-button"
          onClick={() => setCompose({ key: Date.now(), draft: emptyDraft(props.account), files: [] })}
          title="Compose (c)"
        >
          Compose
        </button>
        <span class="account" title={props.account}>
          {props.account}
        </span>
        <button onClick={props.onAccount}>Account</button>
        {isAdmin && <button onClick={props.onAdmin}>Admin</button>}
        <button onClick={() => void logout()}>Log out</button>
      </header>

      <aside class="sidebar" aria-label="Mail folders">
        <button class="drawer-close" onClick={() => setDrawer(false)} aria-label="Close the folder list">
          <Icon name="close" />
        </button>
        <FolderList
          folders={folders}
          current={folder}
          onOpen={openFolder}
          onDrop={(to, from) => void move(from.folder, from.uids, to)}
          onCreate={createFolder}
          onRename={renameFolder}
          onDelete={deleteFolder}
        />
        <p class="shortcuts-hint">
          <button class="link" onClick={() => setHelp(true)}>
            Keyboard shortcuts (?)
          </button>
        </p>
      </aside>

      <main
        class="listpane"
        id="message-list"
        aria-label={currentFolder ? folderLabel(currentFolder) : folder}
      >
        <div class="list-head">
          <h1>
            {q ? `Search: ${q}` : currentFolder ? folderLabel(currentFolder) : folder}
            {list.state.total !== null && <span class="total"> {list.state.total}</span>}
          </h1>
          <div class="list-controls">
            <label>
              <span class="sr-only">Sort by</span>
              <select value={sort} onChange={(e) => setSort(e.currentTarget.value)}>
                <option value="arrival">Newest first</option>
                <option value="arrival-asc">Oldest first</option>
                <option value="date">By date</option>
                <option value="from-asc">By sender</option>
                <option value="subject-asc">By subject</option>
                <option value="size">By size</option>
              </select>
            </label>
            <label class="check">
              <input
                type="checkbox"
                checked={threads}
                onChange={(e) => setThreads(e.currentTarget.checked)}
              />
              Conversations
            </label>
            <label class="check">
              <input
                type="checkbox"
                checked={unreadOnly}
                onChange={(e) => setUnreadOnly(e.currentTarget.checked)}
              />
              Unread
            </label>
          </div>
        </div>
        <BulkBar
          count={checked.size}
          loaded={loadedRows.length}
          folder={folder}
          folders={folders}
          inJunk={specialOf(folder) === '\\Junk'}
          onAll={checkAll}
          onAction={(a) => void bulk(a)}
          onMove={(to) => void bulk({ to })}
        />
        <MessageList
          list={list}
          folder={folder}
          selected={selected?.uid ?? null}
          checked={checked}
          sentFolder={sentFolder}
          rowHeight={phone ? 76 : 64}
          onSelect={(uid, index) => setSelected({ uid, index })}
          onCheck={check}
          dragged={(uid) => (checked.has(uid) ? checkedUids() : [uid])}
          onOpen={(uid) => {
            const row = list.rowAt(selected?.index ?? -1);
            void openMessage(uid, row?.uid === uid ? row.thread?.uids : undefined);
          }}
        />
      </main>

      <section class="readpane" aria-label="Message">
        {open ? (
          <Reader
            m={open}
            folders={folders}
            specialOf={specialOf}
            onAction={(a) => void act(a)}
            onMove={(to) => void move(open.folder, [open.uid], to)}
            onBack={() => setOpen(null)}
            onSenderAllowed={() =>
              say(`Images from ${open.from[0]?.address ?? 'this sender'} will show from now on`)
            }
            thread={openThread}
            onOpenUid={(uid) => void openMessage(uid, openThread)}
          />
        ) : (
          <p class="nothing">Select a message to read it.</p>
        )}
      </section>

      {compose && (
        <Compose
          key={compose.key}
          initial={compose.draft}
          initialFiles={compose.files}
          identities={identities}
          attachmentLimit={props.attachmentLimit}
          signedOut={props.ended !== null}
          onSignIn={() => setLater(null)}
          onClose={(result, info) => {
            setCompose(null);
            // who did not get it must be read, not gone in five seconds (a desktop client asks)
            if (result === 'sent') say(info ?? 'Message sent', info !== undefined);
            else if (result === 'saved') say('Draft saved');
            else if (result === 'discarded') say('Draft discarded');
            list.refresh();
            loadFolders();
          }}
        />
      )}

      {compose && props.ended && props.ended !== later && (
        <SignInAgain
          account={props.account}
          why={props.ended.why}
          onLater={() => setLater(props.ended)}
          onDone={() => {
            props.onSignedInAgain();
            setLogin((n) => n + 1);
          }}
        />
      )}

      {help && (
        <div class="help" role="dialog" aria-modal="true" aria-labelledby="help-title">
          <h2 id="help-title">Keyboard shortcuts</h2>
          <dl>
            {[
              ['j / k', 'next / previous message'],
              ['o or Enter', 'open'],
              ['u or Esc', 'back to the list'],
              ['c', 'compose'],
              ['r / a / f', 'reply / reply all / forward'],
              ['e', 'archive'],
              ['# or Delete', 'delete'],
              ['!', 'spam / not spam'],
              ['s', 'flag'],
              ['Shift+U', 'mark unread'],
              ['x', 'tick the message, for an action on several'],
              ['Ctrl+click / Shift+click', 'tick one more / a range'],
              ['Shift+I', 'mark the ticked messages read'],
              ['Esc (in the list)', 'clear the ticks'],
              ['/', 'search'],
              ['g then i, s, d, a, j, t', 'go to Inbox, Sent, Drafts, Archive, Junk, Trash'],
              ['Ctrl+Enter', 'send (while writing)'],
            ].map(([k, v]) => (
              <div key={k}>
                <dt>
                  <kbd>{k}</kbd>
                </dt>
                <dd>{v}</dd>
              </div>
            ))}
          </dl>
          <button onClick={() => setHelp(false)} autoFocus>
            Close
          </button>
        </div>
      )}

      <div class="toast" role="status" aria-live="polite">
        {toast}
        {toast && toastStays && (
          <button class="toast-close" onClick={() => setToast('')} aria-label="Dismiss">
            <Icon name="close" />
          </button>
        )}
      </div>
    </div>
  );
}
