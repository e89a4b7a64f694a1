// Above the list: a box that selects every loaded message (or none), how many are selected,
// and what can be done to all of them at once. The server takes them in one request.
import { useEffect, useRef } from 'preact/hooks';
import type { Folder } from './api.ts';
import { MoveTo } from './folders.tsx';

export type BulkAction = 'read' | 'unread' | 'flag' | 'unflag' | 'archive' | 'delete' | 'spam' | 'notSpam';

export function BulkBar(props: {
  count: number;
  /** Rows loaded in the list, which "select all" selects. */
  loaded: number;
  folder: string;
  folders: Folder[];
  inJunk: boolean;
  onAll: (on: boolean) => void;
  onAction: (a: BulkAction) => void;
  onMove: (to: string) => void;
}) {
  const all = useRef<HTMLInputElement>(null);
  const some = props.count > 0 && props.count < props.loaded;
  useEffect(() => {
    if (all.current) all.current.indeterminate = some;
  }, [some]);
  const n = props.count;
  const button = (a: BulkAction, label: string, key?: string) => (
    <button type="button" onClick={() => props.onAction(a)} title={key ? `${label} (${key})` : label}>
      {label}
    </button>
  );
  return (
    <div class="bulk-bar" role="toolbar" aria-label="Selected messages">
      <label class="check">
        <input
          ref={all}
          type="checkbox"
          checked={n > 0 && n >= props.loaded}
          disabled={props.loaded === 0}
          onChange={(e) => props.onAll(e.currentTarget.checked && !some)}
        />
        <span class="sr-only">Select all loaded messages</span>
      </label>
      <span class="bulk-count" aria-live="polite">
        {n > 0 ? `${n} selected` : ''}
      </span>
      {n > 0 && (
        <>
          {button('read', 'Mark read', 'Shift+I')}
          {button('unread', 'Mark unread', 'Shift+U')}
          {button('flag', 'Flag')}
          {button('unflag', 'Unflag')}
          {button('archive', 'Archive', 'e')}
          {button('delete', 'Delete', '#')}
          {props.inJunk ? button('notSpam', 'Not spam', '!') : button('spam', 'Spam', '!')}
          <MoveTo folders={props.folders} from={props.folder} onMove={props.onMove} />
          <button type="button" class="link" onClick={() => props.onAll(false)}>
            Clear selection
          </button>
        </>
      )}
    </div>
  );
}
