// What an IMAP command sees of its session: the state it runs in, the extensions the
// client enabled, the account and the selected mailbox, and the few actions that change
// the session (log in, select, start TLS or compression, idle, log out). Commands get
// this type, never the session class: the session imports the command table, and the
// commands import only this.
import type { Bus } from '@mailyard/bus';
import type { MailAccount, Quotas } from '@mailyard/mailstore';
import type { Logger } from '@mailyard/observability';
import type { RetrievalConfig } from '../config.js';
import type { ClientConnection } from '../connection.js';
import type { MessageCache } from '../message-cache.js';
import type { FolderChange } from '../notifier.js';
import type { EnabledExtensions } from './enabled.js';
import type { SelectedMailbox } from './selected.js';

/**
 * When NOTIFY collects again what the store could not read: `firstMs` after a failure,
 * doubled at each failure in a row up to `maxMs`; a folder whose counters fail to read
 * `tries` times in a row is given up, and its next change tried afresh.
 */
export interface NotifyRetry {
  firstMs: number;
  maxMs: number;
  tries: number;
}

/**
 * A session's NOTIFY registration (RFC 5465), as the session drives it: told of every
 * change on the account, asked for the untagged responses due between commands.
 */
export interface NotifyWatcher {
  /** Events for the selected mailbox: EXPUNGE only when a command allows it (selected-delayed). */
  readonly selected: { delayed: boolean; fetch: boolean } | null;
  /** Records a change; false when too many are waiting (the session then ends NOTIFY). */
  record(folder: string, change: FolderChange): boolean;
  /** Whether a change of the selected folder (by this name) is waiting. */
  takeSelected(name: string): boolean;
  /** Whether changes are waiting to be told (`selected`: the selected folder's name, if any). */
  waiting(selected: string | null): boolean;
  /**
   * LIST and STATUS responses for what changed since the last call; throws when the
   * folder list cannot be read. A folder whose counters cannot be read is left waiting,
   * and `unread` says why: the others are told, that one after another call.
   */
  collect(s: AuthedContext): Promise<string[]>;
  /**
   * When a change that collect() left waiting for another event (a RENAME's) is due to be
   * told without it: the session collects again then, as nothing else may come; null: none waits.
   */
  readonly wakeAt: number | null;
  /** Why the last collect() left a folder's change waiting (the store unreadable); null: it did not. */
  readonly unread: Error | null;
  /** Sends the FETCH responses MessageNew asks for, for messages new in the selected folder. */
  fetchNew(s: SelectedContext, uids: number[]): Promise<void>;
}

export type ImapState = 'not-authenticated' | 'authenticated' | 'selected' | 'logout';

/** What the service lends the commands: storage, the header cache, the bus. */
export interface CommandDeps {
  config: Pick<RetrievalConfig, 'message_size_limit' | 'imap_compress'>;
  cache: MessageCache;
  quotas: Quotas;
  bus: Bus;
  /** NOTIFY's schedule for a store it could not read. */
  notifyRetry: NotifyRetry;
}

export interface OkOptions {
  /** RFC 9051 §7.5.1: false during FETCH, STORE, SEARCH by sequence number. */
  allowExpunge?: boolean;
  /** A response code for the tagged OK (COPYUID, APPENDUID, MODIFIED...). */
  code?: string;
  /** The command's own untagged responses (no line ends), sent first in the same write. */
  untagged?: string[];
  /**
   * The selected mailbox's HIGHESTMODSEQ once the updates are told, as the code (RFC 7162
   * §3.2.7: EXPUNGE that removed messages, with QRESYNC on).
   */
  highestModseq?: boolean;
}

export interface ImapContext {
  readonly state: ImapState;
  readonly log: Logger;
  readonly deps: CommandDeps;
  readonly enabled: EnabledExtensions;
  readonly conn: Readonly<Pick<ClientConnection, 'secure' | 'compressed'>>;
  /** The account logged in, and its mailbox store: set together with the authenticated state. */
  readonly user: string | null;
  readonly mailbox: MailAccount | null;
  /** The client's view of the selected folder: set together with the selected state. */
  readonly selected: SelectedMailbox | null;

  /** The CAPABILITY list for the session as it is now. */
  capabilities(): string;
  /** Whether a password may be sent in the clear here (TLS, or a trusted network). */
  plaintextAllowed(): boolean;
  send(data: string): void;
  /**
   * Writes buffers with one writev and waits until the socket has taken them; `partial`:
   * they end inside a response (a FETCH line or its literal), which the next ones finish.
   */
  sendBatch(bufs: Buffer[], partial?: boolean): Promise<void>;
  /** Tagged OK, after the untagged updates of the selected folder. */
  ok(tag: string, text: string, opts?: OkOptions): Promise<void>;
  /** Our own change to a folder: wake our other sessions and other instances. */
  changed(folder: string, change?: FolderChange): void;
  /** NOTIFY (RFC 5465): what the client asked to hear of from now on; null: nothing more. */
  setNotify(watch: NotifyWatcher | null): void;

  /** Checks the credentials and enters the authenticated state; throws ImapReply when refused. */
  login(user: string, password: string): Promise<void>;
  /** AUTHENTICATE PLAIN: answers the initial response, or asks for it. */
  startSasl(tag: string, initial: string | null): Promise<void> | void;
  /** STARTTLS, after its tagged OK: the handshake, anything pipelined dropped. */
  startTls(): Promise<void>;
  startCompression(tag: string): void;
  startIdle(tag: string): void;
  /** Enters the selected state with this view of a folder. */
  select(view: SelectedMailbox): void;
  /** Back to the authenticated state. */
  unselect(): void;
  /** Sends the farewell (BYE and the tagged OK) and ends the session. */
  logout(farewell: string): void;
}

/** The context of a command allowed only once logged in. */
export type AuthedContext = ImapContext & { readonly user: string; readonly mailbox: MailAccount };

/** The context of a command allowed only with a folder selected. */
export type SelectedContext = AuthedContext & { readonly selected: SelectedMailbox };
