import type { ImapFlow } from 'imapflow';
import { decodePath } from 'imapflow/lib/tools.js';
import type { Logger } from '@mailyard/observability';
import type { FolderEvent } from './api-types.js';
import { connectImap, type ImapTarget } from './imap-pool.js';
import type { WebmailMetrics } from './metrics.js';

/** What an event stream tells the browser. */
export type MailEvent =
  | { type: 'new'; folder: string; count: number }
  | { type: 'changed'; folder: string }
  | ({ type: 'folder' } & FolderEvent)
  | { type: 'reconnected' };

interface Token {
  type?: string;
  value?: unknown;
}
type Attr = Token | Attr[];
const atom = (value: string): Token => ({ type: 'ATOM', value });
/**
 * RFC 5465: the selected mailbox's events as IDLE alone tells them, and the account's folders
 * made, deleted and renamed (MailboxName, told as LIST) wherever the change was made.
 */
const NOTIFY_SET: Attr[] = [
  atom('SET'),
  [atom('selected'), [atom('MessageNew'), atom('MessageExpunge'), atom('FlagChange')]],
  [atom('personal'), [atom('MailboxName')]],
];

interface Untagged {
  attributes?: Attr[];
}
/** imapflow's command runner and its table of handlers for responses no command asked for. */
interface Internals {
  exec(command: string, attributes: Attr[]): Promise<{ next(): void }>;
  untaggedHandlers: Record<string, (u: Untagged) => Promise<void>>;
}

/** An atom's or string's text (a literal's comes as a Buffer). */
const textOf = (t: Attr | undefined) => {
  const v = t && !Array.isArray(t) ? t.value : undefined;
  return typeof v === 'string' ? v : Buffer.isBuffer(v) ? v.toString('utf8') : '';
};

/**
 * A NOTIFY LIST response (RFC 5465 §5.4): `\NonExistent` for a folder deleted, an OLDNAME
 * (RFC 5258 §6 extended data) for one renamed, else one created.
 */
function folderEvent(client: ImapFlow, u: Untagged): MailEvent | null {
  const [flags, , name, extended] = u.attributes ?? [];
  const folder = decodePath(client, textOf(name));
  if (!folder) return null;
  const attrs = Array.isArray(flags) ? flags.map((f) => textOf(f).toLowerCase()) : [];
  if (attrs.includes('\\nonexistent')) return { type: 'folder', change: 'deleted', folder };
  const ext = Array.isArray(extended) ? extended : [];
  const at = ext.findIndex((t) => textOf(t).toUpperCase() === 'OLDNAME');
  const old = at >= 0 ? ext[at + 1] : undefined;
  const from = Array.isArray(old) ? decodePath(client, textOf(old[0])) : '';
  return from
    ? { type: 'folder', change: 'renamed', folder, from }
    : { type: 'folder', change: 'created', folder };
}

interface Watch {
  listeners: Set<(e: MailEvent) => void>;
  client: ImapFlow | null;
  closeTimer: NodeJS.Timeout | null;
  retryTimer: NodeJS.Timeout | null;
  backoff: number;
  /** Connected at least once: a later connection tells the browsers to catch up. */
  opened: boolean;
}

/** After the last browser tab of an account goes away, its IDLE session stays this long (a reload comes back). */
const LINGER_MS = 30_000;

/**
 * New mail without reload: one IMAP session per account with browsers listening (on this
 * instance), idling on INBOX (RFC 2177 IDLE, through imapflow), whose EXISTS, EXPUNGE and
 * FETCH FLAGS updates are passed on to every event stream of that account. The retrieval
 * service wakes it within a fraction of a second of a delivery on any instance. The same
 * session asks for the account's folder changes (NOTIFY, where the server offers it), so
 * a folder made, renamed or deleted in one tab, or by a desktop client, shows in the others.
 */
export class MailNotifier {
  private readonly watches = new Map<string, Watch>();
  private stopped = false;

  constructor(
    private readonly target: ImapTarget,
    private readonly logger: Logger,
    private readonly metrics: WebmailMetrics,
  ) {}

  subscribe(account: string, listener: (e: MailEvent) => void): () => void {
    let w = this.watches.get(account);
    if (!w) {
      w = {
        listeners: new Set(),
        client: null,
        closeTimer: null,
        retryTimer: null,
        backoff: 1000,
        opened: false,
      };
      this.watches.set(account, w);
      this.open(account, w);
    }
    if (w.closeTimer) {
      clearTimeout(w.closeTimer);
      w.closeTimer = null;
    }
    w.listeners.add(listener);
    const watch = w;
    return () => {
      watch.listeners.delete(listener);
      if (watch.listeners.size || this.stopped) return;
      watch.closeTimer = setTimeout(() => this.drop(account, watch), LINGER_MS);
      watch.closeTimer.unref();
    };
  }

  /** The account's IDLE session is in place (tests). */
  watching(account: string): boolean {
    const c = this.watches.get(account)?.client;
    return !!c && c.usable && c.idling;
  }

  private emit(w: Watch, e: MailEvent): void {
    for (const l of w.listeners) l(e);
  }

  private open(account: string, w: Watch): void {
    if (this.stopped || this.watches.get(account) !== w) return;
    const client = connectImap(this.target, account, { idle: true, logger: this.logger });
    w.client = client;
    client.on('exists', (e: { path: string; count: number; prevCount: number }) => {
      if (e.count > e.prevCount) this.emit(w, { type: 'new', folder: e.path, count: e.count });
      else this.emit(w, { type: 'changed', folder: e.path });
    });
    client.on('expunge', (e: { path: string }) => this.emit(w, { type: 'changed', folder: e.path }));
    client.on('flags', (e: { path: string }) => this.emit(w, { type: 'changed', folder: e.path }));
    client.on('close', () => {
      this.metrics.imapConnections.dec();
      if (w.client !== client || this.stopped || this.watches.get(account) !== w) return;
      w.client = null;
      // the server went away (restart, shutdown): try again, less often each time
      w.retryTimer = setTimeout(() => {
        w.retryTimer = null;
        this.open(account, w);
      }, w.backoff);
      w.retryTimer.unref();
      w.backoff = Math.min(w.backoff * 2, 30_000);
    });
    this.metrics.imapConnections.inc();
    client
      .connect()
      .then(() => this.watchFolders(client, w))
      .then(() => client.mailboxOpen('INBOX'))
      .then(() => {
        if (w.opened) this.emit(w, { type: 'reconnected' });
        w.opened = true;
        w.backoff = 1000;
      })
      .catch((err: Error) => {
        this.logger.warn({ account, err }, 'IMAP IDLE session failed');
        client.close();
      });
  }

  /** NOTIFY before SELECT: imapflow idles only once a folder is selected, and IDLE would hold it. */
  private async watchFolders(client: ImapFlow, w: Watch): Promise<void> {
    if (!client.capabilities.has('NOTIFY')) return;
    const inner = client as unknown as Internals;
    // only NOTIFY sends LIST unasked: imapflow's own LIST passes its handler with the command
    inner.untaggedHandlers.LIST = async (u) => {
      const e = folderEvent(client, u);
      if (e) this.emit(w, e);
    };
    try {
      const res = await inner.exec('NOTIFY', NOTIFY_SET);
      res.next();
    } catch (err) {
      // refused: new mail is still told, folder changes at the next reload as before
      if (!client.usable) throw err;
      this.logger.warn({ err }, 'IMAP NOTIFY refused: folder changes are not pushed');
    }
  }

  private drop(account: string, w: Watch): void {
    if (this.watches.get(account) !== w || w.listeners.size) return;
    this.watches.delete(account);
    if (w.retryTimer) clearTimeout(w.retryTimer);
    const c = w.client;
    w.client = null;
    c?.logout().catch(() => c.close());
  }

  /** Ends every listener (the streams close themselves); the sessions go in stop(). */
  closeAll(): void {
    this.stopped = true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const all = [...this.watches.values()];
    this.watches.clear();
    await Promise.all(
      all.map(async (w) => {
        if (w.closeTimer) clearTimeout(w.closeTimer);
        if (w.retryTimer) clearTimeout(w.retryTimer);
        const c = w.client;
        w.client = null;
        if (c) await c.logout().catch(() => c.close());
      }),
    );
  }
}
