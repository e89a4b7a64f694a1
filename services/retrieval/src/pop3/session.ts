// POP3, RFC 1939 with CAPA, RESP-CODES (RFC 2449), AUTH-RESP-CODE (RFC 3206), SASL PLAIN
// (RFC 5034) and STLS (RFC 2595). Deletions happen only in the UPDATE state after QUIT.
import { randomBytes } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import type { Redis } from 'ioredis';
import { actingFor, endedText, logIn } from '@mailyard/auth';
import { ipInNetworks } from '@mailyard/config';
import { MessageGoneError, type MailFolder, type MessageInfo } from '@mailyard/mailstore';
import type { Logger } from '@mailyard/observability';
import { setAtMaxmemory } from '@mailyard/runtime/redis';
import { plural } from '@mailyard/smtp-core';
import type { ClientConnection } from '../connection.js';
import type { ImapDeps } from '../imap/session.js';
import { BadCommands, ErrorLog, type BadKind } from '../session-errors.js';
import { MultilineBody } from './multiline.js';

type Pop3State = 'authorization' | 'transaction' | 'update';

/** One POP3 session per mailbox at a time, across every instance (RFC 1939 §8 exclusive lock). */
export class Pop3Locks {
  constructor(private readonly redis: Redis) {}

  async acquire(account: string): Promise<(() => Promise<void>) | null> {
    const key = `pop3:lock:${account.toLowerCase()}`;
    const token = randomBytes(8).toString('hex');
    // taken at maxmemory too: one small key per POP3 session, expiring unless refreshed.
    // Refused (a plain SET NX), every POP3 login failed while Redis was full.
    if (!(await setAtMaxmemory(this.redis, key, token, { ex: 120, nx: true }))) return null;
    // refreshed while the session lives; expires by itself if the instance dies
    const timer = setInterval(() => {
      void this.redis.expire(key, 120).catch(() => undefined);
    }, 30_000);
    timer.unref();
    return async () => {
      clearInterval(timer);
      await this.redis
        .eval(
          `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0`,
          1,
          key,
          token,
        )
        .catch(() => undefined);
    };
  }
}

export type Pop3Deps = ImapDeps & { locks: Pop3Locks };

class Pop3Error extends Error {
  constructor(
    readonly code: string | null,
    text: string,
    /** Counts toward the bad-command limit; not for what the client could not know. */
    readonly bad = true,
  ) {
    super(text);
  }
}

interface Pop3Command {
  states: Pop3State[];
  /**
   * The most arguments the command takes (RFC 1939 §3: each separated by a single space,
   * so a trailing space is one more, empty); unset: the rest of the line is ignored.
   */
  maxArgs?: number;
  run(s: Pop3Session, args: string[]): Promise<void> | void;
}

const MAX_LINE = 1024;

/** Bytes of a message read, and at most waiting for the client, at a time (RETR, TOP). */
const PIECE = 64 * 1024;

/**
 * How long a session whose credential was revoked may go on sending the message it is
 * sending, so that a small one still ends whole with its -ERR [AUTH]; then it is cut.
 */
const REVOKED_GRACE = 3_000;

export class Pop3Session {
  readonly id = randomBytes(6).toString('base64url');
  state: Pop3State = 'authorization';
  private buf = '';
  private user: string | null = null;
  private pendingUser: string | null = null;
  private folder: MailFolder | null = null;
  private messages: MessageInfo[] = [];
  private sizes: number[] = [];
  private deleted = new Set<number>();
  private validity = 0;
  private release: (() => Promise<void>) | null = null;
  private sasl = false;
  private busy = false;
  /** Lines waiting for the command before them; null: a line refused as too long, answered in its turn. */
  private queue: (string | null)[] = [];
  /** Skipping the rest of a line that was already refused as too long. */
  private discarding = false;
  private readonly badCommands: BadCommands;
  private readonly errors: ErrorLog;
  private timer: NodeJS.Timeout | null = null;
  /** login_timeout: the whole time allowed before login. */
  private loginTimer: NodeJS.Timeout | null = null;
  private closed = false;
  /** A RETR or TOP answer is being sent: nothing else may be written into it. */
  private sending = false;
  /** Stops watching the app password this session logged in with. */
  private unwatchCredential: (() => void) | null = null;
  readonly log: Logger;

  constructor(
    readonly conn: ClientConnection,
    readonly deps: Pop3Deps,
  ) {
    this.log = deps.logger.child({ session: this.id, ip: conn.ip, protocol: 'pop3' });
    this.errors = new ErrorLog(this.log);
    this.badCommands = new BadCommands(
      deps.config.imap_max_bad_commands,
      deps.config.imap_max_bad_commands_before_login,
    );
  }

  start(): void {
    this.conn.onData = (c) => this.onData(c);
    this.conn.onClose = () => void this.cleanup();
    // a client still reading a long answer is not idle (Dovecot counts output too): on a
    // slow link a large RETR may take longer than the autologout after its command
    this.conn.onDrain = () => {
      if (!this.closed && this.ending === null) this.touch();
    };
    this.touch();
    this.loginTimer = setTimeout(() => {
      if (this.state !== 'authorization') return;
      this.deps.metrics.limitRejections.inc({ limit: 'login-timeout' });
      this.close('-ERR Not logged in in time');
    }, this.deps.config.login_timeout);
    this.loginTimer.unref();
    this.send(`+OK ${this.deps.config.myhostname} Mailyard POP3 ready`);
  }

  send(line: string): void {
    this.conn.write(line + '\r\n');
  }

  /** Restarts the idle timer: login_idle_timeout before login, the RFC 1939 §3 autologout after. */
  private touch(): void {
    if (this.timer) clearTimeout(this.timer);
    const loggedIn = this.state !== 'authorization';
    this.timer = setTimeout(
      () => {
        this.deps.metrics.limitRejections.inc({ limit: loggedIn ? 'autologout' : 'login-idle' });
        this.close('-ERR Autologout; idle for too long');
      },
      loggedIn ? this.deps.config.pop3_autologout : this.deps.config.login_idle_timeout,
    );
    this.timer.unref();
  }

  private onData(chunk: Buffer): void {
    this.touch();
    this.buf += chunk.toString('latin1');
    for (;;) {
      const nl = this.buf.indexOf('\n');
      if (nl < 0) {
        if (this.buf.length > MAX_LINE) {
          this.buf = '';
          // one answer per line, however many reads it takes to reach its end
          if (!this.discarding) this.queue.push(null);
          this.discarding = true;
        }
        break;
      }
      const line = this.buf.slice(0, nl).replace(/\r$/, '');
      this.buf = this.buf.slice(nl + 1);
      if (this.discarding) {
        this.discarding = false;
        continue;
      }
      this.queue.push(line.length > MAX_LINE ? null : line);
    }
    this.conn.readAhead(this.queue.length);
    void this.drain();
  }

  private async drain(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.queue.length && !this.closed && this.ending === null) {
        // a client that does not read its answers: the next command waits for it
        if (this.conn.backedUp) {
          await this.conn.awaitReader();
          // closed meanwhile (shutdown, autologout): a QUIT waiting behind must not delete
          if (this.closed) break;
        }
        await this.handle(this.queue.shift()!);
        this.conn.readAhead(this.queue.length);
      }
    } finally {
      this.busy = false;
      if (this.ending !== null) this.close(this.ending);
      else if (this.stopping) this.shutdown();
    }
  }

  private stopping = false;
  /** The -ERR that ends the session once the message being sent is whole. */
  private ending: string | null = null;

  /** Cuts a message still being sent REVOKED_GRACE after the session was ended. */
  private endTimer: NodeJS.Timeout | null = null;

  /**
   * Ends the session with `last` from outside its commands (its credential revoked): at
   * once, but after the message being sent, so that the line does not land inside it; the
   * commands queued after it are dropped (a QUIT among them deletes nothing). A message
   * not sent within REVOKED_GRACE is cut without a closing line, as a shutdown cuts it: a
   * client reading slowly must not keep a revoked session, and the mailbox lock, for as
   * long as it takes to read the message.
   */
  private end(last: string): void {
    if (!this.sending) return this.close(last);
    this.ending = last;
    this.endTimer ??= setTimeout(() => this.close(), REVOKED_GRACE);
    this.endTimer.unref();
  }

  /**
   * The server stops: -ERR now if the client is between commands or does not read its
   * answers, else once the command being read or run is done; `now` cuts that short.
   * Without QUIT nothing is deleted.
   */
  shutdown(now = false): void {
    this.stopping = true;
    if (now || this.conn.awaitingReader || (!this.busy && !this.queue.length && !this.buf))
      this.close('-ERR [SYS/TEMP] Server shutting down');
  }

  private countBad(kind: BadKind): void {
    if (this.badCommands.bad(kind, this.state !== 'authorization')) {
      this.deps.metrics.limitRejections.inc({ limit: 'bad-commands' });
      this.close('-ERR Too many invalid commands');
    }
  }

  private async handle(line: string | null): Promise<void> {
    if (line === null) {
      this.sasl = false;
      this.send('-ERR Line too long');
      return this.countBad('invalid');
    }
    if (this.sasl) {
      this.sasl = false;
      if (line === '*') return this.send('-ERR Authentication cancelled');
      return this.wrap(() => this.saslPlain(line));
    }
    const [verb = '', ...args] = line.split(' ');
    const name = verb.toUpperCase();
    const cmd = COMMANDS[name];
    if (!cmd) {
      this.send('-ERR Unknown command');
      return this.countBad('invalid');
    }
    if (!cmd.states.includes(this.state)) {
      this.send(`-ERR ${name} not allowed now`);
      return this.countBad('invalid');
    }
    if (cmd.maxArgs !== undefined && args.length > cmd.maxArgs) {
      this.send(`-ERR Noise after the arguments of ${name}`);
      return this.countBad('invalid');
    }
    const started = process.hrtime.bigint();
    await this.wrap(() => cmd.run(this, args));
    this.deps.metrics.commandLatency.observe(
      { protocol: 'pop3', command: name },
      Number(process.hrtime.bigint() - started) / 1e9,
    );
  }

  private async wrap(fn: () => Promise<void> | void): Promise<void> {
    try {
      await fn();
      this.badCommands.ok(this.state !== 'authorization');
    } catch (err) {
      if (err instanceof Pop3Error) {
        this.send(`-ERR ${err.code ? `[${err.code}] ` : ''}${err.message}`);
      } else {
        this.errors.error({ err }, 'pop3 command failed');
        this.send('-ERR [SYS/TEMP] Internal error');
      }
      if (!(err instanceof Pop3Error) || err.bad) this.countBad('failure');
    }
  }

  plaintextAllowed(): boolean {
    return this.conn.secure || ipInNetworks(this.conn.ip, this.deps.config.plaintext_auth_networks);
  }

  capa(): string[] {
    const caps = [
      'TOP',
      'UIDL',
      'RESP-CODES',
      'AUTH-RESP-CODE',
      'PIPELINING',
      'USER',
      'SASL PLAIN',
      'IMPLEMENTATION Mailyard',
    ];
    if (!this.conn.secure) caps.push('STLS');
    if (this.state === 'authorization' && !this.plaintextAllowed()) {
      // RFC 2595 §4: no USER/SASL before TLS when plaintext is refused
      return caps.filter((c) => c !== 'USER' && c !== 'SASL PLAIN');
    }
    return caps;
  }

  userCmd(name: string): void {
    if (!this.plaintextAllowed())
      throw new Pop3Error('AUTH', 'Plaintext authentication disallowed; use STLS');
    this.pendingUser = name;
    this.send('+OK');
  }

  async pass(password: string): Promise<void> {
    if (!this.pendingUser) throw new Pop3Error(null, 'USER first');
    const user = this.pendingUser;
    this.pendingUser = null;
    await this.login(user, password);
  }

  startSasl(mech: string | undefined, ir: string | undefined): Promise<void> | void {
    if ((mech ?? '').toUpperCase() !== 'PLAIN') throw new Pop3Error(null, 'Unsupported mechanism');
    if (!this.plaintextAllowed())
      throw new Pop3Error('AUTH', 'Plaintext authentication disallowed; use STLS');
    if (ir !== undefined) return this.saslPlain(ir);
    this.sasl = true;
    this.send('+ ');
  }

  private async saslPlain(b64: string): Promise<void> {
    const parts = Buffer.from(b64 === '=' ? '' : b64, 'base64')
      .toString('utf8')
      .split('\0');
    if (parts.length !== 3) throw new Pop3Error(null, 'Invalid SASL PLAIN response');
    const [authz, user, pass] = parts as [string, string, string];
    await this.login(user, pass, authz);
  }

  private async login(username: string, password: string, authzid = ''): Promise<void> {
    const res = await logIn(this.deps.auth, this.deps.serviceAuth, {
      ip: this.conn.ip,
      username,
      password,
      authzid,
      protocol: 'pop3',
    });
    if (!res.ok) {
      this.deps.metrics.logins.inc({ protocol: 'pop3', result: res.reason });
      switch (res.reason) {
        case 'invalid':
          throw new Pop3Error('AUTH', 'Authentication failed');
        case 'locked':
          throw new Pop3Error('AUTH', 'Too many failed logins; try again later');
        case 'unavailable':
          // RFC 3206 §4: SYS/TEMP, a problem that is likely temporary; not the credentials
          this.log.warn({ user: username.slice(0, 100), err: res.error }, 'login could not be checked');
          throw new Pop3Error('SYS/TEMP', 'Temporary authentication failure; try again later');
      }
    }
    const release = await this.deps.locks.acquire(res.account);
    if (!release) throw new Pop3Error('IN-USE', 'Mailbox is in use by another POP3 session');
    // a login that fails from here on (Redis or the store failing just after the lock
    // was taken) holds nothing: the client's retry, in this session or another, is no
    // IN-USE (RFC 2449 §8.1.1), nor is its slot counted against the account
    let counted: boolean;
    try {
      counted = await this.deps.limits.openAccount(res.account);
    } catch (err) {
      await release();
      throw err;
    }
    if (!counted) {
      await release();
      throw new Pop3Error('SYS/TEMP', 'Too many sessions for this account');
    }
    // the connection ended while the slot was counted: nothing else gives it back
    if (this.cleaned) {
      this.deps.limits.closeAccount(res.account);
      await release();
      return;
    }
    this.release = release;
    this.user = res.account;
    try {
      const acct = this.deps.account(res.account);
      await acct.ensureDefaults();
      this.folder = acct.folder('INBOX');
      const snap = await this.folder.snapshot();
      this.messages = snap.messages;
      this.validity = snap.validity;
      // RFC 1939 §11: each line end counts two octets, as RETR sends it; the sizes IMAP's
      // RFC822.SIZE gives, from the same index (a message expunged meanwhile: nothing to send)
      this.sizes = (await this.deps.cache.sentSizes(this.folder, this.messages)).map((n) => Math.max(n, 0));
    } catch (err) {
      // a cleanup that ran meanwhile gave both back already
      if (!this.cleaned) {
        this.release = null;
        this.user = null;
        this.folder = null;
        this.deps.limits.closeAccount(res.account);
        await release();
      }
      throw err;
    }
    this.state = 'transaction';
    if (this.loginTimer) clearTimeout(this.loginTimer);
    // from now on the autologout timer
    this.touch();
    this.unwatchCredential = this.deps.revocations.watch(res.account, res.credential, (why) => {
      this.log.info({ account: res.account, why }, 'credential no longer valid: session ended');
      // nothing marked for deletion is deleted: that happens only after QUIT
      this.end(`-ERR [AUTH] ${endedText(why)}`);
    });
    this.deps.metrics.logins.inc({ protocol: 'pop3', result: 'ok' });
    if (res.cached) this.deps.metrics.loginCacheHits.inc({ protocol: 'pop3' });
    this.log.info(
      { account: res.account, via: res.via, cached: res.cached },
      res.service ? `logged in: ${actingFor(res.service, res.account)}` : 'logged in',
    );
    this.send(`+OK Logged in, ${plural(this.messages.length, 'message')}`);
  }

  msg(arg: string | undefined): number {
    if (!arg || !/^\d+$/.test(arg)) throw new Pop3Error(null, 'Message number required');
    const n = Number(arg);
    if (n < 1 || n > this.messages.length || this.deleted.has(n))
      throw new Pop3Error(null, 'No such message');
    return n;
  }

  stat(): void {
    let count = 0;
    let size = 0;
    this.messages.forEach((_, i) => {
      if (!this.deleted.has(i + 1)) {
        count++;
        size += this.sizes[i]!;
      }
    });
    this.send(`+OK ${count} ${size}`);
  }

  list(arg: string | undefined, uidl: boolean): void {
    const val = (i: number) =>
      uidl
        ? // Dovecot's default pop3_uidl_format %08Xu%08Xv: same UIDLs as a Dovecot on this store
          this.messages[i]!.uid.toString(16).toUpperCase().padStart(8, '0') +
          this.validity.toString(16).toUpperCase().padStart(8, '0')
        : String(this.sizes[i]);
    if (arg !== undefined) {
      const n = this.msg(arg);
      return this.send(`+OK ${n} ${val(n - 1)}`);
    }
    const lines = ['+OK'];
    this.messages.forEach((_, i) => {
      if (!this.deleted.has(i + 1)) lines.push(`${i + 1} ${val(i)}`);
    });
    lines.push('.');
    this.conn.write(lines.join('\r\n') + '\r\n');
  }

  async retr(arg: string | undefined, topLines: number | null): Promise<void> {
    const n = this.msg(arg);
    let file: FileHandle;
    try {
      file = await this.folder!.open(this.messages[n - 1]!);
    } catch (err) {
      // expunged over IMAP since this session began (its numbering stays, RFC 1939 §3):
      // gone for good, so no temporary failure, and no incident; Dovecot's words
      if (err instanceof MessageGoneError || (err as NodeJS.ErrnoException).code === 'ENOENT')
        // not the client's mistake: a session that RETRs many such messages is not
        // closed for it, which would lose its DELEs
        throw new Pop3Error(null, `Message ${n} expunged`, false);
      throw err;
    }
    try {
      await this.sendMessage(
        file,
        `+OK ${topLines === null ? this.sizes[n - 1] + ' octets' : ''}\r\n`,
        new MultilineBody(topLines),
      );
    } finally {
      await file.close().catch(() => undefined);
    }
  }

  /**
   * Sends the message in `file` as it is read, PIECE at a time, each once the client
   * has taken all but PIECE of what came before (Dovecot streams it too): a session holds
   * no more of a large message than that, however slowly it is read. A read that fails
   * before anything was sent is a -ERR; after the +OK nothing can be said within the
   * message, and the connection ends without its "." line.
   */
  private async sendMessage(file: FileHandle, ok: string, body: MultilineBody): Promise<void> {
    const piece = Buffer.allocUnsafe(PIECE);
    let opened = false;
    try {
      while (!body.done) {
        let got: number;
        try {
          ({ bytesRead: got } = await file.read(piece, 0, PIECE, null));
        } catch (err) {
          if (!opened) throw err;
          this.errors.error({ err }, 'pop3 message could not be read whole');
          return this.close();
        }
        if (this.closed) return;
        if (!opened) {
          this.conn.write(ok);
          this.sending = opened = true;
        }
        if (!got) break;
        // copied: the piece is read into again while the socket may still hold this
        this.conn.write(Buffer.concat(body.push(piece.subarray(0, got))));
        await this.conn.drain(PIECE);
        if (this.closed) return;
      }
      this.conn.write(body.end());
    } finally {
      this.sending = false;
    }
    await this.conn.drain();
  }

  dele(arg: string | undefined): void {
    const n = this.msg(arg);
    this.deleted.add(n);
    this.send(`+OK Message ${n} deleted`);
  }

  rset(): void {
    this.deleted.clear();
    this.send('+OK');
  }

  async quit(): Promise<void> {
    if (this.state === 'transaction') {
      // RFC 1939 §6: the UPDATE state, entered only by QUIT
      this.state = 'update';
      const uids = [...this.deleted].map((n) => this.messages[n - 1]!.uid);
      try {
        if (uids.length) {
          await this.folder!.expunge(uids);
          this.deps.notifier.changed(this.user!, 'INBOX');
        }
      } catch (err) {
        this.log.error({ err }, 'POP3 update failed');
        return this.close('-ERR [SYS/TEMP] Some deleted messages were not removed');
      }
      return this.close(`+OK Logging out, ${plural(uids.length, 'message')} deleted`);
    }
    this.close('+OK Logging out');
  }

  async stls(): Promise<void> {
    if (this.conn.secure) throw new Pop3Error(null, 'TLS already active');
    this.send('+OK Begin TLS negotiation');
    this.buf = '';
    this.queue = [];
    this.conn.readAhead(0);
    try {
      await this.conn.startTls(this.deps.tls());
    } catch {
      this.close();
    }
  }

  /**
   * Ends the connection with `last`; while a message is being sent (a shutdown's grace
   * spent, the autologout of a client that stopped reading) with nothing more: a line
   * written into the message would be read as part of it. The client sees the answer
   * end without its "." line.
   */
  close(last?: string): void {
    if (this.closed) return;
    this.closed = true;
    this.conn.end(last && !this.sending ? last + '\r\n' : undefined);
    void this.cleanup();
  }

  private cleaned = false;
  private async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.loginTimer) clearTimeout(this.loginTimer);
    if (this.endTimer) clearTimeout(this.endTimer);
    this.unwatchCredential?.();
    this.errors.close();
    if (this.user) this.deps.limits.closeAccount(this.user);
    this.deps.metrics.activeSessions.dec({ protocol: 'pop3' });
    this.deps.metrics.sentBytes.inc({ protocol: 'pop3' }, this.conn.sent);
    await this.release?.();
  }
}

const AUTH: Pop3State[] = ['authorization'];
const TRANS: Pop3State[] = ['transaction'];
const BOTH: Pop3State[] = ['authorization', 'transaction'];

const COMMANDS: Record<string, Pop3Command> = {
  CAPA: { states: BOTH, run: (s) => s.conn.write(['+OK', ...s.capa(), '.'].join('\r\n') + '\r\n') },
  STLS: { states: AUTH, run: (s) => s.stls() },
  USER: { states: AUTH, run: (s, a) => s.userCmd(a.join(' ')) },
  PASS: { states: AUTH, run: (s, a) => s.pass(a.join(' ')) },
  AUTH: { states: AUTH, run: (s, a) => s.startSasl(a[0], a[1]) },
  QUIT: { states: BOTH, run: (s) => s.quit() },
  NOOP: { states: TRANS, run: (s) => s.send('+OK') },
  STAT: { states: TRANS, run: (s) => s.stat() },
  LIST: { states: TRANS, maxArgs: 1, run: (s, a) => s.list(a[0], false) },
  UIDL: { states: TRANS, maxArgs: 1, run: (s, a) => s.list(a[0], true) },
  RETR: { states: TRANS, maxArgs: 1, run: (s, a) => s.retr(a[0], null) },
  TOP: {
    states: TRANS,
    maxArgs: 2,
    run: (s, a) => {
      if (!a[1] || !/^\d+$/.test(a[1])) throw new Pop3Error(null, 'TOP needs a line count');
      return s.retr(a[0], Number(a[1]));
    },
  },
  DELE: { states: TRANS, maxArgs: 1, run: (s, a) => s.dele(a[0]) },
  RSET: { states: TRANS, run: (s) => s.rset() },
};
