import { EventKeys, type MailboxChanged } from '@mailyard/contracts';
import type { Bus } from '@mailyard/bus';

/** What changed in a folder (NOTIFY tells these apart; IDLE only needs the folder). */
export interface FolderChange {
  kind: 'messages' | 'folder' | 'subscription';
  /** RENAME: the previous name. */
  oldFolder?: string;
}

export type ChangeListener = (folder: string, change: FolderChange) => void;

/**
 * Fans `mailbox.changed` events out to this instance's sessions. Every retrieval
 * instance has its own auto-delete queue (Bus.subscribe), so a delivery or a change
 * made through another instance reaches every idling session everywhere.
 */
export class ChangeNotifier {
  private readonly listeners = new Map<string, Set<ChangeListener>>();

  constructor(
    private readonly bus: Bus,
    private readonly publishOwn: boolean,
  ) {}

  /** The bus hands over only events its catalogue validated (others are dead-lettered). */
  async start(): Promise<void> {
    await this.bus.subscribe(EventKeys.mailboxChanged, (ev) =>
      this.emit(ev.account, ev.folder, {
        kind: ev.kind ?? 'messages',
        ...(ev.oldFolder !== undefined ? { oldFolder: ev.oldFolder } : {}),
      }),
    );
  }

  on(account: string, fn: ChangeListener): () => void {
    const key = account.toLowerCase();
    let set = this.listeners.get(key);
    if (!set) {
      set = new Set();
      this.listeners.set(key, set);
    }
    set.add(fn);
    return () => {
      set.delete(fn);
      if (!set.size) this.listeners.delete(key);
    };
  }

  private emit(account: string, folder: string, change: FolderChange): void {
    for (const fn of this.listeners.get(account.toLowerCase()) ?? []) fn(folder, change);
  }

  /** A change made by one of our sessions: tell local sessions now, other instances via the bus. */
  changed(account: string, folder: string, change: FolderChange = { kind: 'messages' }): void {
    this.emit(account, folder, change);
    if (!this.publishOwn) return;
    const ev: MailboxChanged = {
      v: 1,
      account,
      folder,
      queueId: null,
      at: new Date().toISOString(),
      kind: change.kind,
      ...(change.oldFolder !== undefined ? { oldFolder: change.oldFolder } : {}),
    };
    this.bus.publishEvent(EventKeys.mailboxChanged, ev).catch(() => undefined);
  }
}
