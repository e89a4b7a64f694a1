import { useState } from 'preact/hooks';
import type { Folder } from './api.ts';
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

/** The folder list: a navigation landmark; each folder is a drop target for dragged messages. */
export function FolderList(props: {
  folders: Folder[];
  current: string;
  onOpen: (path: string) => void;
  onDrop: (to: string, from: { folder: string; uids: number[] }) => void;
}) {
  const [over, setOver] = useState<string | null>(null);
  return (
    <nav class="folders" aria-label="Folders">
      <ul>
        {props.folders
          .filter((f) => f.selectable)
          .map((f) => {
            const depth = f.parent ? f.path.split(f.delimiter || '/').length - 1 : 0;
            const label = folderLabel(f);
            const current = f.path === props.current;
            return (
              <li key={f.path}>
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
              </li>
            );
          })}
      </ul>
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
