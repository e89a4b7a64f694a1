import { randomBytes } from 'node:crypto';
import type { SecureContext } from 'node:tls';
import {
  actingFor,
  logIn,
  type Authenticator,
  endedText,
  type CredentialRevocations,
  type ServiceAuthorizer,
} from '@mailyard/auth';
import { BackendUnavailableError, type Bus } from '@mailyard/bus';
import { ipInNetworks } from '@mailyard/config';
import {
  ArgReader,
  CommandFramer,
  MailboxNameError,
  ParseError,
  parseCommand,
  parseCommandHead,
  readTag,
  type Chunk,
  type FramedCommand,
  type FramerEvent,
  type FramerLimits,
} from '@mailyard/imap-core';
import { isStorageFault, type MailAccount, type Quotas } from '@mailyard/mailstore';
import type { Logger } from '@mailyard/observability';
import type { RetrievalConfig } from '../config.js';
import type { ClientConnection, SessionLimits } from '../connection.js';
import type { MessageCache } from '../message-cache.js';
import type { RetrievalMetrics } from '../metrics.js';
import type { ChangeNotifier, FolderChange } from '../notifier.js';
import { BadCommands, ErrorLog, type BadKind } from '../session-errors.js';
import { capabilities } from './capabilities.js';
import { COMMANDS } from './commands/index.js';
import { contextUpdates } from './commands/search-context.js';
import type {
  AuthedContext,
  ImapContext,
  ImapState,
  NotifyRetry,
  NotifyWatcher,
  OkOptions,
  SelectedContext,
} from './context.js';
import { EnabledExtensions } from './enabled.js';
import { ImapReply, reply } from './replies.js';
import { ResponseCutError } from './response-batch.js';
import { SelectedGoneError, type SelectedMailbox } from './selected.js';

/** Unread output past which NOTIFY gives up on a client (NOTIFICATIONOVERFLOW). */
const NOTIFY_BACKLOG = 1 << 20;
/** Collections of NOTIFY's events one push may make before a waiting command runs. */
const NOTIFY_ROUNDS = 3;
const NOTIFICATION_OVERFLOW = '* OK [NOTIFICATIONOVERFLOW] Too many changes to tell; NOTIFY is off\r\n';
/** The selected folder is gone (SelectedGoneError): Dovecot's words, on which clients log in again. */
const SELECTED_GONE = '* BYE IMAP session state is inconsistent, please relogin.\r\n';

/**
 * Whether a command line names a command after which the client's bytes are read another
 * way (IDLE's DONE, a SASL response, TLS, deflate): what is pipelined after it waits for
 * it to run. RFC 2177: "a IDLE\r\nb NOOP {3}\r\n" is IDLE ended by a line that is not
 * DONE (BAD, as Dovecot answers), and b's "{3}" no literal of it.
 */
function takesInput(line: string): boolean {
  const name = /^\S+ ([A-Za-z]+)(?: |$)/.exec(line)?.[1]?.toUpperCase();
  return name !== undefined && COMMANDS.get(name)?.takesInput === true;
}

/**
 * Whether a change to `folder` may concern the selected folder: one to it, or a DELETE or
 * RENAME of it or of a level above it (the folders below go with it).
 */
function touches(selected: string, folder: string, change: FolderChange): boolean {
  const about = (name: string | undefined) =>
    name !== undefined &&
    (name === selected || (change.kind === 'folder' && selected.startsWith(name + '/')));
  return about(folder) || about(change.oldFolder);
}

/** What the session does with the next input line (STYLE: input mode as a union). */
export type InputMode =
  | { m: 'command' }
  /** notifyDue: changes to the folder wait for imap_idle_notify_delay (onChange). */
  | { m: 'idle'; tag: string; stop: () => void; notifyDue: NodeJS.Timeout | null }
  | { m: 'sasl'; tag: string; mechanism: 'PLAIN' }
  | { m: 'closed' };

export interface ImapDeps {
  config: RetrievalConfig;
  auth: Authenticator;
  revocations: CredentialRevocations;
  /** Accepts the webmail's login acting for a user (SASL PLAIN authzid); none: refused. */
  serviceAuth?: ServiceAuthorizer;
  account: (name: string) => MailAccount;
  quotas: Quotas;
  notifier: ChangeNotifier;
  cache: MessageCache;
  bus: Bus;
  limits: SessionLimits;
  /** The certificate now in force (renewals reach STARTTLS without a restart). */
  tls: () => SecureContext;
  logger: Logger;
  metrics: RetrievalMetrics;
  /** NOTIFY's schedule for a store it could not read (NOTIFY_RETRY in production). */
  notifyRetry: NotifyRetry;
}

/**
 * RFC 7162 §3.2: VANISHED and EXISTS carry no mod-sequence, so a QRESYNC client told of
 * expunges or new messages by `updates` hears the HIGHESTMODSEQ they brought, unless a
 * FETCH among them told it already (as Dovecot tells it); without it, the client would
 * resynchronise from before them next time.
 */
function modseqUnheard(updates: string[], highest: number): boolean {
  if (!updates.some((l) => /^\* (?:VANISHED |\d+ EXISTS$)/.test(l))) return false;
  // a loop, not Math.max(...): an update may tell a FETCH for each of many messages
  let told = 0;
  for (const l of updates) told = Math.max(told, Number(/ MODSEQ \((\d+)\)/.exec(l)?.[1] ?? 0));
  return told < highest;
}

/** One IMAP connection: input modes, states, login, IDLE. Commands see it as an ImapContext. */
export class ImapSession implements ImapContext {
  readonly id = randomBytes(6).toString('base64url');
  state: ImapState = 'not-authenticated';
  mode: InputMode = { m: 'command' };
  user: string | null = null;
  mailbox: MailAccount | null = null;
  selected: SelectedMailbox | null = null;
  readonly enabled = new EnabledExtensions();
  readonly log: Logger;
  private framer: CommandFramer;
  private queue: FramerEvent[] = [];
  private running = false;
  private readonly badCommands: BadCommands;
  private readonly errors: ErrorLog;
  private timer: NodeJS.Timeout | null = null;
  /** login_timeout: the whole time allowed before login. */
  private loginTimer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;
  /** Stops watching the app password this session logged in with. */
  private unwatchCredential: (() => void) | null = null;
  private notifyPending = false;
  /** A change was told while pushUpdates ran: it reads the folder once more. */
  private notifyAgain = false;
  /** NOTIFY's registration (RFC 5465), while one is set. */
  private watch: NotifyWatcher | null = null;
  private notifyScheduled = false;
  /** Notifications wait for the command being run. */
  private notifyDeferred = false;
  /** NOTIFY ended for overflow during a command: the client is told once it is done. */
  private overflowDue = false;
  /** The next collection of NOTIFY's events after one the store failed, and its delay. */
  private notifyRetry: NodeJS.Timeout | null = null;
  private notifyRetryMs = 0;
  /** The collection of NOTIFY's events when a change left waiting is due (NotifyWatcher.wakeAt). */
  private notifyWake: NodeJS.Timeout | null = null;

  constructor(
    readonly conn: ClientConnection,
    readonly deps: ImapDeps,
  ) {
    this.log = deps.logger.child({ session: this.id, ip: conn.ip });
    this.errors = new ErrorLog(this.log);
    this.badCommands = new BadCommands(
      deps.config.imap_max_bad_commands,
      deps.config.imap_max_bad_commands_before_login,
    );
    this.framer = this.newFramer();
  }

  private newFramer(): CommandFramer {
    const framer = new CommandFramer(this.framerLimits());
    framer.holdAfter = takesInput;
    return framer;
  }

  private framerLimits(): FramerLimits {
    return {
      maxLine: this.deps.config.imap_max_line_length,
      maxLiteral: Math.min(
        this.deps.config.message_size_limit,
        this.state === 'not-authenticated' ? this.deps.config.imap_max_literal_before_login : Infinity,
      ),
    };
  }

  start(): void {
    this.conn.onData = (chunk) => this.onData(chunk);
    this.conn.onClose = () => this.cleanup();
    // a client still reading a long answer is not idle (Dovecot counts output too): on a
    // slow link a large FETCH may take longer than the autologout after its command
    this.conn.onDrain = () => {
      if (this.mode.m !== 'closed') this.touch();
    };
    this.touch();
    this.loginTimer = setTimeout(() => {
      if (this.state !== 'not-authenticated') return;
      this.log.info('not logged in in time');
      this.deps.metrics.limitRejections.inc({ limit: 'login-timeout' });
      this.close('* BYE Not logged in in time\r\n');
    }, this.deps.config.login_timeout);
    this.loginTimer.unref();
    this.send(
      `* OK [CAPABILITY ${this.capabilities()}] ${this.deps.config.myhostname} Mailyard IMAP ready\r\n`,
    );
  }

  plaintextAllowed(): boolean {
    return this.conn.secure || ipInNetworks(this.conn.ip, this.deps.config.plaintext_auth_networks);
  }

  capabilities(): string {
    return capabilities({
      loggedIn: this.state !== 'not-authenticated',
      secure: this.conn.secure,
      plaintextAllowed: this.plaintextAllowed(),
      compressed: this.conn.compressed,
      config: this.deps.config,
    });
  }

  send(data: string | Buffer): void {
    this.conn.write(data);
  }

  sendChunks(chunks: Chunk[]): void {
    let text = '';
    for (const c of chunks) {
      if (typeof c === 'string') text += c;
      else {
        if (text) this.conn.write(text);
        text = '';
        this.conn.write(c);
      }
    }
    if (text) this.conn.write(text);
  }

  async sendBatch(bufs: Buffer[], partial = false): Promise<void> {
    // written a part at a time as the client takes them: cut inside until all are out
    this.partial = true;
    await this.conn.writeDrained(bufs);
    this.partial = partial;
  }

  /**
   * What was sent ends inside a response (a FETCH line, a literal): a line written now
   * would be read as part of it, so close() writes none.
   */
  private partial = false;

  select(view: SelectedMailbox): void {
    this.selected = view;
    this.state = 'selected';
  }

  unselect(): void {
    if (this.state !== 'selected') return;
    this.selected = null;
    this.state = 'authenticated';
  }

  logout(farewell: string): void {
    this.state = 'logout';
    this.close(farewell);
  }

  /** Restarts the idle timer: login_idle_timeout before login, the RFC 9051 §5.4 autologout after. */
  private touch(): void {
    if (this.timer) clearTimeout(this.timer);
    const loggedIn = this.state !== 'not-authenticated';
    this.timer = setTimeout(
      () => {
        this.log.info({ loggedIn }, 'autologout');
        this.deps.metrics.limitRejections.inc({ limit: loggedIn ? 'autologout' : 'login-idle' });
        this.close('* BYE Autologout; idle for too long\r\n');
      },
      loggedIn ? this.deps.config.imap_autologout : this.deps.config.login_idle_timeout,
    );
    this.timer.unref();
  }

  private onData(chunk: Buffer): void {
    this.touch();
    if (this.framer.holding) {
      // before login one command at a time, as Dovecot's imap-login reads them: what a
      // client sends after LOGIN is framed once the LOGIN ran, with the limits of the
      // state it runs in; after IDLE, in the mode IDLE puts the session in. Reading
      // waits meanwhile
      this.framer.append(chunk);
      this.conn.readAhead(Infinity);
      return;
    }
    this.frame(chunk);
    void this.drainQueue();
  }

  /** Frames what the client sent (and what was held) into the queue of commands. */
  private frame(chunk: Buffer): void {
    this.framer.hold = this.state === 'not-authenticated';
    this.framer.setLimits(this.framerLimits());
    let events: FramerEvent[];
    try {
      events = this.framer.push(chunk);
    } catch (err) {
      this.errors.error({ err }, 'framer failed');
      this.close('* BYE Internal error\r\n');
      return;
    }
    this.queue.push(...events);
    this.readAhead();
  }

  /** Reading waits while the commands read ahead are many, or carry large literals. */
  private readAhead(): void {
    let bytes = 0;
    for (const ev of this.queue)
      if (ev.type === 'command') for (const l of ev.command.literals) bytes += l.length;
    this.conn.readAhead(this.queue.length, bytes);
  }

  /** A new framer and no queued commands: after STARTTLS and COMPRESS, anything pipelined is dropped. */
  private freshInput(): void {
    this.framer = this.newFramer();
    this.queue = [];
    this.conn.readAhead(0);
  }

  private async drainQueue(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length && this.mode.m !== 'closed' && this.ending === null) {
        // a client that does not read its answers: the next command waits for it
        if (this.conn.backedUp) await this.conn.awaitReader();
        const ev = this.queue.shift()!;
        try {
          await this.handleEvent(ev);
        } catch (err) {
          // every reply path catches its own errors; one that escapes ends the session, not the process
          this.errors.error({ err }, 'session failed');
          this.close('* BYE Internal error\r\n');
        }
        // held (before login, after IDLE...): framed now that the command before it has run
        if (!this.queue.length && this.framer.holding) this.frame(Buffer.alloc(0));
        this.readAhead();
      }
    } finally {
      this.notRunning();
      if (this.ending !== null) this.close(this.ending);
      else {
        if (this.overflowDue && !this.stopping) {
          this.overflowDue = false;
          this.send(NOTIFICATION_OVERFLOW);
        }
        if (this.stopping) this.shutdown();
        else if (this.notifyDeferred) {
          this.notifyDeferred = false;
          void this.pushNotifications();
        }
      }
    }
  }

  /** Who waits for the command (or NOTIFY round) running now to end. */
  private afterRun: (() => void)[] = [];

  private notRunning(): void {
    this.running = false;
    for (const wake of this.afterRun.splice(0)) wake();
  }

  /** Resolves once no command runs: what is sent unasked never lands inside a reply. */
  private async betweenCommands(): Promise<void> {
    while (this.running) await new Promise<void>((r) => this.afterRun.push(r));
  }

  private stopping = false;
  /** The BYE that ends the session once the command (or NOTIFY round) running now is done. */
  private ending: string | null = null;

  /**
   * Ends the session with `bye` from outside its commands (its credential revoked): at once
   * between commands; else once the answer being sent is whole, so that the BYE never lands
   * inside it (a client would read it as part of a literal), the commands queued after it
   * dropped; at once without it when the client is not reading that answer.
   */
  private end(bye: string): void {
    if (!this.running) return this.close(bye);
    if (this.conn.awaitingReader) return this.close();
    this.ending = bye;
  }

  /**
   * The server stops: BYE now if the client is between commands (IDLE included) or does
   * not read its answers, else once the command being read or run is done; `now` cuts
   * that short.
   */
  shutdown(now = false): void {
    this.stopping = true;
    if (now || this.conn.awaitingReader || (!this.running && !this.queue.length && !this.framer.pending))
      this.close('* BYE [UNAVAILABLE] Server shutting down\r\n');
  }

  private async handleEvent(ev: FramerEvent): Promise<void> {
    if (ev.type === 'continue') return this.literalAnnounced(ev);
    if (ev.type === 'error') {
      this.deps.metrics.limitRejections.inc({ limit: ev.reason });
      if (ev.fatal) {
        this.close(
          ev.reason === 'command-too-long'
            ? '* BYE Command too long\r\n'
            : '* BYE [TOOBIG] Literal too large\r\n',
        );
        return;
      }
      const text = ev.reason === 'line-too-long' ? 'Command line too long' : '[TOOBIG] Literal too large';
      this.answerBad(
        `${ev.tag ?? '*'} ${ev.reason === 'line-too-long' ? 'BAD' : 'NO'} ${text}\r\n`,
        'invalid',
      );
      return;
    }
    const mode = this.mode;
    switch (mode.m) {
      case 'closed':
        return;
      case 'idle':
        return this.idleInput(mode, ev.command);
      case 'sasl':
        return this.saslInput(mode, ev.command);
      case 'command':
        return this.command(ev.command);
    }
  }

  /**
   * Sends the refusal of a bad command and counts it (BadCommands). The invalid command
   * that reaches the limit before login is answered by the BYE alone, as Dovecot's
   * imap-login answers it; after login, or on a failed login, the refusal comes first.
   */
  private answerBad(line: string, kind: BadKind): void {
    const authenticated = this.state !== 'not-authenticated';
    const closing = this.badCommands.bad(kind, authenticated);
    if (!closing || authenticated || kind !== 'invalid') this.send(line);
    if (closing) {
      this.deps.metrics.limitRejections.inc({ limit: 'bad-commands' });
      this.close('* BYE Too many invalid IMAP commands\r\n');
    }
  }

  private async command(cmd: FramedCommand): Promise<void> {
    const started = process.hrtime.bigint();
    // known before parsing, so that even a failure of the parser is answered with it
    const tag = readTag(cmd.lines[0] ?? '') ?? '*';
    let name = 'UNKNOWN';
    try {
      const parsed = parseCommand(cmd, this.deps.config.imap_max_line_length);
      name = parsed.name;
      const def = COMMANDS.get(name);
      if (!def) throw reply.bad(`Unknown command ${name.slice(0, 30)}`);
      if (!def.states.includes(this.state)) {
        if (this.state === 'not-authenticated') throw reply.bad('Log in first');
        if (def.states.includes('selected')) throw reply.notSelected();
        throw reply.bad(`${name} not allowed now`);
      }
      const args = def.parse(new ArgReader(parsed.args, this.enabled.utf8), this);
      await def.run(this, tag, args, name);
      this.badCommands.ok(this.state !== 'not-authenticated');
      this.deps.metrics.commands.inc({ protocol: 'imap', command: name, result: 'ok' });
    } catch (err) {
      await this.refuseCounted(tag, name, err);
    } finally {
      this.deps.metrics.commandLatency.observe(
        { protocol: 'imap', command: COMMANDS.has(name) ? name : 'UNKNOWN' },
        Number(process.hrtime.bigint() - started) / 1e9,
      );
    }
  }

  /**
   * A synchronising literal, in its turn after the commands sent before it: the client
   * waits for "+" before it sends the bytes. A command that can already tell it would
   * fail answers at once instead (RFC 9051 §7.5), as Dovecot refuses an APPEND to a
   * folder that does not exist, and the client sends none of the literal.
   */
  private async literalAnnounced(ev: Extract<FramerEvent, { type: 'continue' }>): Promise<void> {
    const head = parseCommandHead(ev.command);
    const def = head && COMMANDS.get(head.name);
    if (head && def?.beforeLiteral && def.states.includes(this.state)) {
      try {
        await def.beforeLiteral(this, new ArgReader(head.args, this.enabled.utf8), ev.size);
      } catch (err) {
        this.framer.dropCommand();
        await this.refuseCounted(head.tag, head.name, err);
        return;
      }
    }
    this.send('+ Ready for literal data\r\n');
  }

  private async refuseCounted(tag: string, name: string, err: unknown): Promise<void> {
    const status = await this.refuse(tag, name, err);
    this.deps.metrics.commands.inc({
      protocol: 'imap',
      command: COMMANDS.has(name) ? name : 'UNKNOWN',
      result: status.toLowerCase(),
    });
  }

  /**
   * The tagged NO or BAD for a command that failed, rendered in one place: a ParseError
   * is BAD, an ImapReply says what it is, a name that is no modified UTF-7 is NO [CANNOT],
   * anything else is a bug (NO [SERVERBUG], logged). Errors, failed logins and bugs count
   * toward the disconnect.
   */
  private async refuse(tag: string, name: string, thrown: unknown): Promise<'NO' | 'BAD' | 'BYE'> {
    if (thrown instanceof SelectedGoneError) return this.selectedGone();
    if (thrown instanceof ResponseCutError) return this.responseCut(thrown);
    // a backend that failed (Redis, the store's disk) is neither the client's fault nor a
    // bug here: a temporary NO that counts toward no disconnect
    const backend = thrown instanceof BackendUnavailableError || isStorageFault(thrown);
    if (backend) this.errors.error({ err: thrown, command: name }, 'backend unavailable, command refused');
    const err =
      thrown instanceof MailboxNameError
        ? reply.invalidMailboxName(thrown.message)
        : backend
          ? reply.backendUnavailable()
          : thrown;
    let status: 'NO' | 'BAD';
    let code: string | null = null;
    let text: string;
    if (err instanceof ParseError) {
      status = 'BAD';
      text = `Syntax error: ${err.message}`;
    } else if (err instanceof ImapReply) {
      status = err.status;
      code = err.code;
      text = err.message;
    } else {
      status = 'NO';
      code = 'SERVERBUG';
      text = 'Internal error; the incident is logged';
    }
    // what a message echoes of the input stays readable: resp-text is 7-bit text (RFC 9051
    // §9), and a line that ends in "{5}" reads as a literal announcement to a client
    text = text.replace(/[^\x20-\x7e]/g, '?').replace(/(\{\d*\+?\})$/, '$1.');
    // updates before the tagged reply, as after any command; a command that failed because
    // the selected folder is gone (the store's FolderGoneError) is no incident
    if (this.selected && status === 'NO') {
      try {
        await this.flushUpdates(err instanceof ImapReply && err.allowExpunge);
      } catch (e) {
        if (e instanceof SelectedGoneError) return this.selectedGone();
      }
    }
    if (code === 'SERVERBUG') this.errors.error({ err, command: name }, 'command failed');
    const line = `${tag} ${status} ${code ? `[${code}] ` : ''}${text}\r\n`;
    if (status === 'BAD') this.answerBad(line, 'invalid');
    else if (code === 'AUTHENTICATIONFAILED' || code === 'SERVERBUG') this.answerBad(line, 'failure');
    else this.send(line);
    return status;
  }

  /**
   * The selected folder was deleted or renamed: the session ends with a BYE, as Dovecot
   * ends it, since nothing the client knows of the folder holds any more; the client logs
   * in again and finds the folders as they now are (RFC 9051 §7.1.5 lets a server close
   * the connection so). Dovecot answers nothing else once it finds out; here a command
   * that did its work still gets its OK first (ok()), so that a client never repeats an
   * APPEND or a COPY that was made, and the webmail's request on that connection succeeds.
   */
  private selectedGone(): 'BYE' {
    this.log.info({ folder: this.selected?.name }, 'selected folder gone: session ended');
    this.close(SELECTED_GONE);
    return 'BYE';
  }

  /** A response failed halfway (ResponseCutError): the connection ends, with nothing after it. */
  private responseCut(err: ResponseCutError): 'BYE' {
    this.errors.error({ err: err.cause }, 'response failed after part of it was sent: connection closed');
    this.close();
    return 'BYE';
  }

  /** Sends pending EXPUNGE / EXISTS / FETCH FLAGS updates for the selected folder. */
  async flushUpdates(allowExpunge: boolean): Promise<void> {
    if (!this.selected) return;
    const lines = await this.updates(this.selected, allowExpunge);
    if (lines.length) this.send(lines.join('\r\n') + '\r\n');
  }

  /** The untagged updates for the selected folder: CONTEXT=SEARCH results first, as Dovecot sends them. */
  private async updates(view: SelectedMailbox, allowExpunge: boolean): Promise<string[]> {
    const before = view.uids;
    const lines = await view.update({
      allowExpunge,
      condstore: this.enabled.condstore,
      qresync: this.enabled.qresync,
    });
    lines.unshift(...(await contextUpdates(view, this.deps.cache, before)));
    return lines;
  }

  /** Tagged OK, after the untagged updates the client should see first. */
  async ok(tag: string, text: string, opts: OkOptions = {}): Promise<void> {
    const own = opts.untagged?.length ? opts.untagged.join('\r\n') + '\r\n' : '';
    const done = (code = opts.code) => `${tag} OK ${code ? `[${code}] ` : ''}${text}\r\n`;
    if (!this.selected) return this.send(own + done());
    // the updates and the tagged reply in one write: one wake-up of the client, not two
    let lines: string[];
    try {
      lines = await this.updates(this.selected, opts.allowExpunge ?? true);
    } catch (err) {
      // what the command did is told before its failure
      if (own) this.send(own);
      if (!(err instanceof SelectedGoneError)) throw err;
      // the command did its work: its OK, then the end of the session
      this.send(done());
      this.selectedGone();
      return;
    }
    const highest = `HIGHESTMODSEQ ${this.selected.highestModseq}`;
    const unheard = this.enabled.qresync && modseqUnheard(lines, this.selected.highestModseq);
    let code = opts.code;
    if (opts.highestModseq || (unheard && !code)) code = highest;
    else if (unheard) lines.push(`* OK [${highest}] Highest`);
    this.send(own + (lines.length ? lines.join('\r\n') + '\r\n' : '') + done(code));
  }

  // --- login -------------------------------------------------------------------

  async login(username: string, password: string, authzid = ''): Promise<void> {
    if (!this.plaintextAllowed()) {
      this.deps.metrics.logins.inc({ protocol: 'imap', result: 'refused' });
      throw reply.privacyRequired();
    }
    const res = await logIn(this.deps.auth, this.deps.serviceAuth, {
      ip: this.conn.ip,
      username,
      password,
      authzid,
      protocol: 'imap',
    });
    if (!res.ok) {
      this.deps.metrics.logins.inc({ protocol: 'imap', result: res.reason });
      const user = username.slice(0, 100);
      switch (res.reason) {
        case 'invalid':
          this.log.info({ user, reason: res.reason }, 'login failed');
          throw reply.authFailed();
        case 'locked':
          this.log.info({ user, reason: res.reason }, 'login failed');
          throw reply.locked();
        case 'unavailable':
          this.log.warn({ user, err: res.error }, 'login could not be checked');
          throw reply.authUnavailable();
      }
    }
    if (!(await this.deps.limits.openAccount(res.account))) {
      this.deps.metrics.limitRejections.inc({ limit: 'sessions-per-account' });
      throw reply.tooManySessions();
    }
    // the connection ended while the slot was counted: nothing else gives it back
    if (this.cleaned) return this.deps.limits.closeAccount(res.account);
    this.user = res.account;
    this.mailbox = this.deps.account(res.account);
    await this.mailbox.ensureDefaults();
    this.state = 'authenticated';
    if (this.loginTimer) clearTimeout(this.loginTimer);
    // from now on the autologout timer
    this.touch();
    this.deps.metrics.logins.inc({ protocol: 'imap', result: 'ok' });
    if (res.cached) this.deps.metrics.loginCacheHits.inc({ protocol: 'imap' });
    this.log.info(
      { account: res.account, via: res.via, cached: res.cached },
      res.service ? `logged in: ${actingFor(res.service, res.account)}` : 'logged in',
    );
    this.unsubscribe = this.deps.notifier.on(res.account, (folder, change) => this.onChange(folder, change));
    this.unwatchCredential = this.deps.revocations.watch(res.account, res.credential, (why) => {
      this.log.info({ account: res.account, why }, 'credential no longer valid: session ended');
      // RFC 5530 EXPIRED: access is no longer permitted with this passphrase
      this.end(`* BYE [EXPIRED] ${endedText(why)}\r\n`);
    });
  }

  startSasl(tag: string, initial: string | null): Promise<void> | void {
    if (initial !== null) return this.saslResponse(tag, initial);
    this.mode = { m: 'sasl', tag, mechanism: 'PLAIN' };
    this.framer.raw = true;
    this.send('+ \r\n');
  }

  private async saslInput(mode: Extract<InputMode, { m: 'sasl' }>, cmd: FramedCommand): Promise<void> {
    this.mode = { m: 'command' };
    this.framer.raw = false;
    const line = cmd.lines.join('');
    if (line === '*') {
      this.send(`${mode.tag} BAD Authentication cancelled\r\n`);
      return;
    }
    try {
      await this.saslResponse(mode.tag, line);
    } catch (err) {
      await this.refuse(mode.tag, 'AUTHENTICATE', err);
    }
  }

  /** SASL PLAIN (RFC 4616): [authzid] NUL authcid NUL password. */
  private async saslResponse(tag: string, b64: string): Promise<void> {
    if (b64 !== '=' && !/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw reply.bad('Invalid base64');
    const parts = Buffer.from(b64 === '=' ? '' : b64, 'base64')
      .toString('utf8')
      .split('\0');
    // no credentials to check: a failed login, as Dovecot answers, not a bad command
    if (parts.length !== 3) throw reply.authFailed();
    const [authz, user, pass] = parts as [string, string, string];
    await this.login(user, pass, authz);
    this.send(`${tag} OK [CAPABILITY ${this.capabilities()}] Logged in\r\n`);
  }

  /** COMPRESS DEFLATE: the OK, then compression from the next byte on; pipelined commands are dropped. */
  startCompression(tag: string): void {
    this.freshInput();
    this.send(`${tag} OK DEFLATE active\r\n`);
    this.conn.startCompression();
    this.deps.metrics.compressedSessions.inc();
  }

  async startTls(): Promise<void> {
    // RFC 9051 §6.2.1: anything pipelined after STARTTLS is discarded
    this.freshInput();
    try {
      await this.conn.startTls(this.deps.tls());
    } catch (err) {
      this.log.info({ err }, 'TLS handshake failed');
      this.close();
    }
  }

  // --- IDLE (RFC 2177) -----------------------------------------------------------

  startIdle(tag: string): void {
    let poll: NodeJS.Timeout | null = null;
    const mode: Extract<InputMode, { m: 'idle' }> = {
      m: 'idle',
      tag,
      notifyDue: null,
      stop: () => {
        if (poll) clearInterval(poll);
        if (mode.notifyDue) clearTimeout(mode.notifyDue);
      },
    };
    this.mode = mode;
    this.framer.raw = true;
    this.send('+ idling\r\n');
    // a fallback for changes made by tools that do not publish events
    poll = setInterval(() => this.onChange(this.selected?.name ?? ''), 30_000);
    poll.unref();
    void this.pushUpdates();
  }

  private async idleInput(mode: Extract<InputMode, { m: 'idle' }>, cmd: FramedCommand): Promise<void> {
    mode.stop();
    this.mode = { m: 'command' };
    this.framer.raw = false;
    try {
      if (cmd.lines.join('').toUpperCase() !== 'DONE') throw reply.bad('Expected DONE');
      await this.ok(mode.tag, 'IDLE terminated');
    } catch (err) {
      await this.refuse(mode.tag, 'IDLE', err);
    }
  }

  private onChange(folder: string, change: FolderChange = { kind: 'messages' }): void {
    if (this.watch) {
      if (this.watch.record(folder, change)) void this.pushNotifications();
      else this.notificationOverflow();
      return;
    }
    if (this.mode.m !== 'idle' || !this.selected) return;
    if (folder !== '' && !touches(this.selected.name, folder, change)) return;
    this.deps.metrics.idleNotifications.inc();
    const delay = this.deps.config.imap_idle_notify_delay;
    if (!delay) return void this.pushUpdates();
    // the first change starts the wait; those that follow within it are told with it
    const mode = this.mode;
    if (mode.notifyDue) return;
    mode.notifyDue = setTimeout(() => {
      mode.notifyDue = null;
      void this.pushUpdates();
    }, delay);
    mode.notifyDue.unref();
  }

  private async pushUpdates(): Promise<void> {
    if (this.notifyPending) {
      // told while the folder is being read: the read may have begun before the change
      this.notifyAgain = true;
      return;
    }
    this.notifyPending = true;
    try {
      do {
        this.notifyAgain = false;
        // serialised with command handling so updates never interleave with a reply
        await this.betweenCommands();
        if (this.mode.m === 'idle') await this.flushUpdates(true);
      } while (this.notifyAgain && this.mode.m === 'idle');
    } catch (err) {
      // told at once, as Dovecot tells an idling client
      if (err instanceof SelectedGoneError) this.selectedGone();
      else this.log.warn({ err }, 'IDLE update failed');
    } finally {
      this.notifyPending = false;
    }
  }

  /** Our own change: wake our other sessions and other instances. */
  changed(folder: string, change?: FolderChange): void {
    if (this.user) this.deps.notifier.changed(this.user, folder, change);
  }

  // --- NOTIFY (RFC 5465) ---------------------------------------------------------

  setNotify(watch: NotifyWatcher | null): void {
    this.watch = watch;
    this.stopNotifyRetry();
    this.stopNotifyWake();
  }

  /**
   * A collection of `w`'s events failed (the store unreadable for a moment): what it left
   * waiting is collected again on its own, after a delay that grows while it keeps failing.
   */
  private retryNotifications(w: NotifyWatcher): void {
    if (this.notifyRetry || this.watch !== w || this.mode.m === 'closed') return;
    const { firstMs, maxMs } = this.deps.notifyRetry;
    this.notifyRetryMs = Math.min(maxMs, this.notifyRetryMs * 2 || firstMs);
    this.notifyRetry = setTimeout(() => {
      this.notifyRetry = null;
      if (this.watch === w && w.waiting(this.selected?.name ?? null)) void this.pushNotifications();
    }, this.notifyRetryMs);
    this.notifyRetry.unref();
  }

  private stopNotifyRetry(): void {
    if (this.notifyRetry) clearTimeout(this.notifyRetry);
    this.notifyRetry = null;
    this.notifyRetryMs = 0;
  }

  /**
   * A collection of `w`'s events left a change waiting for an event that may never come
   * (a RENAME's, for a folder gone while one nobody told of is there): `w` is collected
   * again once the wait is over, with no other event, command or IDLE poll to bring it.
   */
  private wakeNotifications(w: NotifyWatcher): void {
    this.stopNotifyWake();
    const at = w.wakeAt;
    // after a failed collection the retry's schedule brings the next one: a wait that ended
    // meanwhile would arm this at once, again after every failure
    if (at === null || this.notifyRetry || this.watch !== w || this.mode.m === 'closed') return;
    this.notifyWake = setTimeout(
      () => {
        this.notifyWake = null;
        if (this.watch === w) void this.pushNotifications();
      },
      // a timer may fire a millisecond early: the collection then arms it again
      Math.max(1, at - Date.now()),
    );
    this.notifyWake.unref();
  }

  private stopNotifyWake(): void {
    if (this.notifyWake) clearTimeout(this.notifyWake);
    this.notifyWake = null;
  }

  /**
   * RFC 5465 §5.8: when the client cannot keep up (its unread output past NOTIFY_BACKLOG,
   * or too many changes waiting) it is told, and NOTIFY ends as after NOTIFY NONE.
   */
  private notificationOverflow(): void {
    this.watch = null;
    this.deps.metrics.limitRejections.inc({ limit: 'notify-overflow' });
    // as every notification, never inside a command's responses (drainQueue sends it after)
    if (this.running) this.overflowDue = true;
    else this.send(NOTIFICATION_OVERFLOW);
  }

  /**
   * Sends what NOTIFY asked for, between commands (RFC 5465 §3 lets the server send them
   * at any time; not inside a command's responses) and in IDLE: STATUS and LIST for other
   * mailboxes, and the selected mailbox's updates (EXPUNGE held back for
   * selected-delayed until a command allows it) with FETCH for new messages.
   */
  private async pushNotifications(): Promise<void> {
    if (this.notifyScheduled) return;
    this.notifyScheduled = true;
    // the rest of this turn's events first: one read of the store answers them all
    await new Promise((r) => setImmediate(r));
    this.notifyScheduled = false;
    // a command is running: its end sends them (drainQueue)
    if (this.running) {
      this.notifyDeferred = true;
      return;
    }
    const w = this.watch;
    if (!w || this.state === 'not-authenticated' || (this.mode.m !== 'command' && this.mode.m !== 'idle'))
      return;
    // commands wait until the responses are out, so that none lands inside a reply
    this.running = true;
    try {
      // events recorded while a round ran (a command waiting meanwhile was sent after them
      // by the client) go out in the next, before that command; a few rounds at most, so
      // that a stream of events does not hold commands back
      for (let round = 0; round < NOTIFY_ROUNDS; round++) {
        if (this.watch !== w || (round > 0 && !w.waiting(this.selected?.name ?? null))) break;
        if (this.conn.queued > NOTIFY_BACKLOG) return this.notificationOverflow();
        await this.notifyRound(w);
      }
      // all collected: a later failure waits the shortest delay again
      this.stopNotifyRetry();
    } catch (err) {
      if (err instanceof SelectedGoneError) this.selectedGone();
      else if (err instanceof ResponseCutError) this.responseCut(err);
      else {
        this.log.warn({ err }, 'NOTIFY update failed');
        this.retryNotifications(w);
      }
    } finally {
      this.wakeNotifications(w);
      this.notRunning();
      void this.drainQueue();
    }
  }

  /** One collection of NOTIFY's events, and the selected mailbox's updates they call for. */
  private async notifyRound(w: NotifyWatcher): Promise<void> {
    const lines = await w.collect(this as AuthedContext);
    const unread = w.unread;
    if (lines.length) this.send(lines.join('\r\n') + '\r\n');
    const view = this.selected;
    if (view && w.takeSelected(view.name) && (w.selected || this.mode.m === 'idle')) {
      this.deps.metrics.idleNotifications.inc();
      const before = new Set(view.uids);
      await this.flushUpdates(this.mode.m === 'idle' || !w.selected?.delayed);
      const fresh = view.uids.filter((u) => !before.has(u));
      if (fresh.length && w.selected?.fetch && this.selected === view)
        await w.fetchNew(this as SelectedContext, fresh);
    }
    // a folder whose counters could not be read is still waiting: the rest told, the round
    // fails and is tried again after a delay (pushNotifications), as when the list fails
    if (unread !== null) throw unread;
  }

  /**
   * Ends the connection with `last`; inside a response being sent (the end of a
   * shutdown's grace, the autologout of a client that stopped reading a long FETCH) with
   * nothing more, as Dovecot writes no BYE while a command holds the output: a BYE there
   * would be read as part of a literal. The client sees the response cut and no OK.
   */
  close(last?: string): void {
    if (this.mode.m === 'idle') this.mode.stop();
    this.mode = { m: 'closed' };
    this.conn.end(this.partial ? undefined : last);
    this.cleanup();
  }

  private cleaned = false;
  private cleanup(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    if (this.mode.m === 'idle') this.mode.stop();
    this.mode = { m: 'closed' };
    if (this.timer) clearTimeout(this.timer);
    if (this.loginTimer) clearTimeout(this.loginTimer);
    this.stopNotifyRetry();
    this.stopNotifyWake();
    this.errors.close();
    this.unsubscribe?.();
    this.unwatchCredential?.();
    if (this.user) this.deps.limits.closeAccount(this.user);
    this.deps.metrics.activeSessions.dec({ protocol: 'imap' });
    this.deps.metrics.sentBytes.inc({ protocol: 'imap' }, this.conn.sent);
  }
}
