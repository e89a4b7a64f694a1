import { useEffect, useRef, useState } from 'preact/hooks';
import type { ApiError, Folder } from './api.ts';
import { folderLabel } from './format.ts';
import { Icon } from './icons.tsx';

const ICONS: Record<string, string> = {
  '\\Inbox': 'inbox',
  '\\Drafts': 'drafts',
  '\\Sent': 'sent',
  '\\Archive': 'archive',
  '\\Junk': 'junk',
  '\\Trash': 'trash',
};

export const DRAG_TYPE = 'application/x-mailyard-message';

/** Inbox and the folders the webmail files mail into: never renamed or deleted (the server refuses too). */
export const isSpecial = (f: Folder) => f.specialUse !== null || f.path.toUpperCase() === 'INBOX';

/**
 * A level that only holds folders (IMAP `\\Noselect`: another client made `a/b` without
 * `a`): listed as a group, offered to hold new folders, never opened. One with nothing
 * under it (a subscription to a folder gone) is not listed.
 */
export const isGroup = (f: Folder, all: Folder[]) =>
  !f.selectable && !!f.delimiter && all.some((x) => x.path.startsWith(f.path + f.delimiter));

/** A folder's name field: Enter keeps it, Escape leaves it; the server's refusal is said under it. */
function FolderNameForm(props: {
  label: string;
  initial: string;
  submit: string;
  parents?: Folder[];
  onSubmit: (name: string, parent: string) => Promise<void>;
  onCancel: () => void;
}) {
  const [name, setName] = useState(props.initial);
  const [parent, setParent] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.select(), []);
  return (
    <form
      class="folder-form"
      onSubmit={(e) => {
        e.preventDefault();
        setBusy(true);
        setError('');
        props.onSubmit(name, parent).then(
          () => setBusy(false),
          (err: ApiError) => {
            setBusy(false);
            setError(err.message);
            input.current?.focus();
          },
        );
      }}
      onKeyDown={(e) => {
        // Escape leaves the field, not the list or the open message
        if (e.key !== 'Escape') return;
        e.stopPropagation();
        props.onCancel();
      }}
    >
      <label>
        <span>{props.label}</span>
        <input
          ref={input}
          value={name}
          maxLength={100}
          required
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? 'folder-form-error' : undefined}
          onInput={(e) => setName(e.currentTarget.value)}
        />
      </label>
      {props.parents && (
        <label>
          <span>Inside</span>
          <select value={parent} onChange={(e) => setParent(e.currentTarget.value)}>
            <option value="">No folder (top level)</option>
            {props.parents.map((f) => (
              <option key={f.path} value={f.path}>
                {f.path}
              </option>
            ))}
          </select>
        </label>
      )}
      {error && (
        <p class="error" role="alert" id="folder-form-error">
          {error}
        </p>
      )}
      <div class="folder-form-buttons">
        <button class="primary" type="submit" disabled={busy}>
          {props.submit}
        </button>
        <button type="button" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

/**
 * The folder list: a navigation landmark; each folder is a drop target for dragged
 * messages. Under it "New folder"; each of the user's own folders has its options
 * (Rename, Delete) behind a button of its own, reachable by Tab as everything else.
 */
export function FolderList(props: {
  folders: Folder[];
  current: string;
  onOpen: (path: string) => void;
  onDrop: (to: string, from: { folder: string; uids: number[] }) => void;
  onCreate: (name: string, parent: string) => Promise<void>;
  onRename: (f: Folder, name: string) => Promise<void>;
  onDelete: (f: Folder) => Promise<void>;
}) {
  const [over, setOver] = useState<string | null>(null);
  /** The folder whose options are shown, the one being renamed, or the new folder's form. */
  const [options, setOptions] = useState<string | null>(null);
  const [renaming, setRenaming] = useState<string | null>(null);
  const [creating, setCreating] = useState(false);
  const firstOption = useRef<HTMLButtonElement>(null);
  const newButton = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (options) firstOption.current?.focus();
  }, [options]);
  // back to the folder's options button, or to New folder when the folder is gone
  const focusOptionsOf = (path: string) =>
    window.setTimeout(() =>
      (
        document.querySelector<HTMLElement>(`[data-options="${CSS.escape(path)}"]`) ?? newButton.current
      )?.focus(),
    );
  return (
    <nav class="folders" aria-label="Folders">
      <ul>
        {props.folders
          .filter((f) => f.selectable || isGroup(f, props.folders))
          .map((f) => {
            const depth = f.parent ? f.path.split(f.delimiter || '/').length - 1 : 0;
            const label = folderLabel(f);
            const current = f.path === props.current;
            if (renaming === f.path)
              return (
                <li key={f.path} style={{ paddingLeft: `${depth}rem` }}>
                  <FolderNameForm
                    label={`New name for ${label}`}
                    initial={f.name}
                    submit="Rename"
                    onSubmit={async (name) => {
                      await props.onRename(f, name);
                      setRenaming(null);
                    }}
                    onCancel={() => {
                      setRenaming(null);
                      focusOptionsOf(f.path);
                    }}
                  />
                </li>
              );
            return (
              <li key={f.path}>
                {!f.selectable ? (
                  // as Roundcube's virtual folders: a heading for the folders under it
                  <span
                    class="folder group"
                    style={{ paddingLeft: `${0.75 + depth}rem` }}
                    data-folder={f.path}
                  >
                    <Icon name="folder" />
                    <span class="name">{label}</span>
                  </span>
                ) : (
                  <a
                    href={`#folder=${encodeURIComponent(f.path)}`}
                    class={`folder${current ? ' current' : ''}${over === f.path ? ' drop' : ''}`}
                    style={{ paddingLeft: `${0.75 + depth}rem` }}
                    aria-current={current ? 'page' : undefined}
                    data-folder={f.path}
                    onClick={(e) => {
                      e.preventDefault();
                      props.onOpen(f.path);
                    }}
                    onDragOver={(e) => {
                      if (!e.dataTransfer?.types.includes(DRAG_TYPE)) return;
                      e.preventDefault();
                      e.dataTransfer.dropEffect = 'move';
                      setOver(f.path);
                    }}
                    onDragLeave={() => setOver((o) => (o === f.path ? null : o))}
                    onDrop={(e) => {
                      e.preventDefault();
                      setOver(null);
                      const data = e.dataTransfer?.getData(DRAG_TYPE);
                      const from = data ? (JSON.parse(data) as { folder: string; uids: number[] }) : null;
                      // dropped back on their own folder: nothing moves (as in Gmail), nor says it did
                      if (from && from.folder !== f.path) props.onDrop(f.path, from);
                    }}
                  >
                    <Icon name={ICONS[f.specialUse ?? ''] ?? 'folder'} />
                    <span class="name">{label}</span>
                    {f.unseen > 0 && (
                      <span class="count" aria-label={`${f.unseen} unread`}>
                        {f.unseen}
                      </span>
                    )}
                  </a>
                )}
                {!isSpecial(f) && (
                  <button
                    class="folder-options"
                    data-options={f.path}
                    aria-label={`Options for ${label}`}
                    aria-expanded={options === f.path}
                    title="Rename or delete"
                    onClick={() => setOptions((o) => (o === f.path ? null : f.path))}
                  >
                    <Icon name="more" />
                  </button>
                )}
                {options === f.path && (
                  <div
                    class="folder-actions"
                    onKeyDown={(e) => {
                      if (e.key !== 'Escape') return;
                      e.stopPropagation();
                      setOptions(null);
                      focusOptionsOf(f.path);
                    }}
                  >
                    <button
                      ref={firstOption}
                      aria-label={`Rename ${label}`}
                      onClick={() => {
                        setOptions(null);
                        setRenaming(f.path);
                      }}
                    >
                      Rename
                    </button>
                    <button
                      class="danger"
                      aria-label={`Delete ${label}`}
                      onClick={() => {
                        setOptions(null);
                        void props.onDelete(f).finally(() => focusOptionsOf(f.path));
                      }}
                    >
                      Delete
                    </button>
                  </div>
                )}
              </li>
            );
          })}
      </ul>
      {creating ? (
        <FolderNameForm
          label="Folder name"
          initial=""
          submit="Create"
          parents={props.folders.filter((f) => (f.selectable || isGroup(f, props.folders)) && !isSpecial(f))}
          onSubmit={async (name, parent) => {
            await props.onCreate(name, parent);
            setCreating(false);
          }}
          onCancel={() => {
            setCreating(false);
            window.setTimeout(() => newButton.current?.focus());
          }}
        />
      ) : (
        <button class="new-folder" ref={newButton} onClick={() => setCreating(true)}>
          <Icon name="plus" /> New folder
        </button>
      )}
    </nav>
  );
}

/** "Move to…": every folder but the one the messages are in; picking one moves them. */
export function MoveTo(props: { folders: Folder[]; from: string; onMove: (to: string) => void }) {
  return (
    <label class="move">
      <span class="sr-only">Move to folder</span>
      <select
        value=""
        onChange={(e) => {
          const to = e.currentTarget.value;
          e.currentTarget.value = '';
          if (to) props.onMove(to);
        }}
      >
        <option value="">Move to…</option>
        {props.folders
          .filter((f) => f.selectable && f.path !== props.from)
          .map((f) => (
            <option key={f.path} value={f.path}>
              {folderLabel(f)}
            </option>
          ))}
      </select>
    </label>
  );
}
