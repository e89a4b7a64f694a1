import { isAscii } from 'node:buffer';
import type { ConnectionOptions } from 'node:tls';
import { isIP } from 'node:net';
import type { Logger } from '@mailyard/observability';
import {
  replyText,
  SmtpClient,
  SmtpConnectionError,
  TlsHandshakeError,
  type SmtpReply,
  type TransactionResult,
} from './smtp-client.js';
import { downgradeTo7Bit, type Downgrade } from '@mailyard/smtp-core/mime-downgrade';
import type { Target } from './mx.js';
import type { TlsSessionCache } from './tls-sessions.js';

/** What happened to one recipient in one attempt: a tagged outcome with the reply that decided it. */
export type RecipientOutcome =
  | { kind: 'delivered'; recipient: string; reply: string; remoteMta: string; tls: boolean }
  | { kind: 'deferred'; recipient: string; status: string; reason: string; remoteMta: string | null }
  | { kind: 'bounced'; recipient: string; status: string; reason: string; remoteMta: string | null };

/** How to treat TLS with this destination. */
export type TlsPolicy =
  /** STARTTLS when offered, certificate not checked (RFC 7435 opportunistic security). */
  | { mode: 'may' }
  /** TLS required and the certificate must verify for the MX host name (MTA-STS enforce, relayhost). */
  | { mode: 'verify'; reason: string }
  | { mode: 'none' };

export interface AttemptOptions {
  myhostname: string;
  /**
   * The SMTP port (OUTBOUND_PORT): only a server on it that names itself with our hostname
   * is a loop (Postfix: SMTP_MISC_FLAG_LOOP_DETECT on port 25 only); on another port it is
   * a content filter or a second MTA of this host, which may well share our name.
   */
  loopPort: number;
  /** The destination (recipient domain or relayhost), named when mail for it loops back to us. */
  destination?: string;
  /**
   * The targets are the relayhost: a refusal before the transaction (HELO, AUTH, a loop
   * back to us) is a setting of ours to fix, deferred, never bounced.
   */
  relayhost?: boolean;
  targets: Target[];
  tls: TlsPolicy;
  ca?: (string | Buffer)[] | undefined;
  auth?: { user: string; pass: string } | undefined;
  connectTimeoutMs: number;
  replyTimeoutMs: number;
  dataXferTimeoutMs?: number | undefined;
  dataDoneTimeoutMs?: number | undefined;
  bindAddress?: string | undefined;
  bindAddress6?: string | undefined;
  logger: Logger;
  /** A session an earlier message to this destination left open. */
  parked?: ParkedSession | null;
  /** Hand the session back for the next message instead of QUIT. */
  keepSession?: boolean;
  /** Recipients per transaction at most (RECIPIENT_LIMIT). */
  recipientLimit?: number | undefined;
  /** Sessions per attempt at most, 0 for no limit (MX_SESSION_LIMIT). */
  sessionLimit?: number | undefined;
  /** Told for each session used: whether it was a parked one. */
  onSession?: (reused: boolean) => void;
  /** TLS sessions to resume, for opportunistic TLS. */
  tlsSessions?: TlsSessionCache | undefined;
  /** Told for each TLS handshake: whether an earlier session was resumed. */
  onTls?: (resumed: boolean) => void;
  /**
   * Told of the recipients of each transaction the server took (250 after the data),
   * before the next transaction starts: a message cut off later (SIGKILL, a shutdown, a
   * slow domain of the same message) must not be sent to them again.
   */
  onDelivered?: (recipients: string[]) => Promise<void>;
}

export interface Message {
  mailFrom: string;
  recipients: string[];
  data: Buffer;
  smtputf8: boolean;
  /** The BODY= the sender declared (RFC 6152, RFC 3030); 7BIT when it declared none. */
  body?: '7BIT' | '8BITMIME' | 'BINARYMIME';
  /**
   * The data converted to 7 bit once a server without 8BITMIME needs it: shared by the
   * attempts of one message (its recipient domains), so that it is made at most once.
   */
  sevenBit?: SevenBitCopy;
}

/** The 7-bit conversion of a message's data, made on first need. */
export interface SevenBitCopy {
  current: Promise<Downgrade> | null;
}

const statusOf = (r: SmtpReply) => r.enhanced ?? `${String(r.code)[0]}.0.0`;

function hasNonAscii(buf: Buffer | string): boolean {
  return typeof buf === 'string' ? /[^\x00-\x7f]/.test(buf) : !isAscii(buf);
}

function headerEnd(buf: Buffer): number {
  const i = buf.indexOf('\r\n\r\n');
  const j = buf.indexOf('\n\n');
  if (i === -1) return j === -1 ? buf.length : j;
  return j === -1 ? i : Math.min(i, j);
}

/** A failure that moves on to the next address, remembered for the final deferral reason. */
class NextTarget extends Error {
  constructor(
    readonly status: string,
    message: string,
    readonly remoteMta: string | null = null,
  ) {
    super(message);
  }
}

/**
 * A verdict on the whole message before any transaction, from this host: every recipient
 * of the attempt gets it, and no other address is tried (Postfix smtp_site_fail() with a
 * 5xx status: a hard error is final, only a soft one qualifies for a backup MX).
 */
class SessionVerdict extends Error {
  constructor(
    readonly status: string,
    message: string,
    readonly remoteMta: string | null,
  ) {
    super(message);
  }
}

/** A finished session that may carry the next message to its destination, and what it may carry. */
export interface ParkedSession {
  client: SmtpClient;
  key: string;
}

export interface AttemptResult {
  outcomes: RecipientOutcome[];
  /** The session, still open, when it may be reused (`keepSession`); the caller parks or QUITs it. */
  session: ParkedSession | null;
}

/**
 * One delivery attempt of one message to one destination: the targets in order until
 * every recipient has a verdict. Connection failures, 4xx/5xx greetings (Postfix's
 * smtp_skip_5xx_greeting), 4xx to EHLO/HELO, TLS policy failures and a loop back to us at
 * a backup MX move to the next address; a 5xx to HELO (after EHLO was refused) and a loop
 * back to us at the best MX bounce every recipient left at once. In a transaction, a 2xx
 * delivers and a 5xx bounces wherever it comes from; a 4xx (to MAIL FROM, RCPT TO or the
 * data, a 421, a lost session) defers only at the final server: elsewhere the recipients
 * it concerns go on to the next address, as Postfix's smtp_rcpt_fail()/smtp_bulk_fail()
 * keep them for a backup host. The final server is the last address, or the session that
 * reaches `sessionLimit` (Postfix: SMTP_MISC_FLAG_FINAL_SERVER, smtp_mx_session_limit).
 * When no address is left, the recipients still pending are deferred with the last reason.
 * A `parked` session of an earlier message is used for the target it is connected to,
 * once RSET shows it is still alive; one that fits no target is closed.
 */
export async function attemptDelivery(msg: Message, opts: AttemptOptions): Promise<AttemptResult> {
  const parked = { current: opts.parked ?? null };
  if (parked.current && !opts.targets.some((t) => keysFor(t, opts.tls, opts).includes(parked.current!.key))) {
    // connected to a host that is no longer among the targets: not kept beside a new one
    await parked.current.client.quit();
    parked.current = null;
  }
  let last = new NextTarget('4.4.1', 'no address to deliver to');
  // the message converted to 7 bit, made once for the targets (and domains) that need it
  const sevenBit = msg.sevenBit ?? { current: null };
  // recipients still without a verdict, and the verdicts (delivered, bounced) of the others
  let pending = msg.recipients;
  const settled: RecipientOutcome[] = [];
  const done = (outcomes: RecipientOutcome[], session: ParkedSession | null = null): AttemptResult => ({
    outcomes: inOrder(msg.recipients, [...settled, ...outcomes]),
    session,
  });
  const refused = (v: SessionVerdict): AttemptResult =>
    done(alike(pending, 'bounced', v.status, v.message, v.remoteMta));
  const limit = opts.sessionLimit ?? MX_SESSION_LIMIT;
  let sessions = 0;
  const tryTarget = async (target: Target, ready: () => void): Promise<AttemptResult> => {
    const m = { ...msg, recipients: pending };
    try {
      return await deliverTo(m, target, opts, opts.tls, parked, sevenBit, ready);
    } catch (err) {
      if (!(err instanceof TlsHandshakeError && opts.tls.mode === 'may')) throw err;
      // RFC 7435: opportunistic TLS that fails falls back to cleartext with this host
      opts.logger.info({ host: target.host, ip: target.ip, err }, 'TLS failed, retrying without TLS');
      return await deliverTo(m, target, opts, { mode: 'none' }, parked, sevenBit, ready);
    }
  };
  try {
    for (const [i, target] of opts.targets.entries()) {
      // a session counts towards the limit once it is ready for MAIL FROM: a host that
      // fails the handshake does not (Postfix: "Don't count handshake errors")
      const server = { final: i === opts.targets.length - 1 };
      const ready = () => {
        if (limit > 0 && ++sessions >= limit) server.final = true;
      };
      let r: AttemptResult;
      try {
        r = await tryTarget(target, ready);
      } catch (err) {
        if (err instanceof SessionVerdict) return refused(err);
        last = toNext(err);
        if (server.final) break;
        opts.logger.info({ host: target.host, ip: target.ip, err: last }, 'trying next address');
        continue;
      }
      const soft = r.outcomes.filter((o) => o.kind === 'deferred');
      if (server.final || !soft.length) return done(r.outcomes, r.session);
      settled.push(...r.outcomes.filter((o) => o.kind !== 'deferred'));
      pending = soft.map((o) => o.recipient);
      last = new NextTarget(soft[0]!.status, soft[0]!.reason, soft[0]!.remoteMta);
      // one session at a time: the destination slot this attempt holds stands for one
      await r.session?.client.quit();
      opts.logger.info(
        { host: target.host, ip: target.ip, rcpts: pending, err: last },
        'deferred by a server that is not the last, trying next address',
      );
    }
  } finally {
    if (parked.current) await parked.current.client.quit();
  }
  return done(alike(pending, 'deferred', last.status, last.message, last.remoteMta));
}

/** The outcomes in the order of the message's recipients. */
function inOrder(recipients: string[], outcomes: RecipientOutcome[]): RecipientOutcome[] {
  const at = new Map(recipients.map((r, i) => [r, i]));
  return outcomes.sort((a, b) => (at.get(a.recipient) ?? 0) - (at.get(b.recipient) ?? 0));
}

function toNext(err: unknown): NextTarget {
  if (err instanceof NextTarget) return err;
  if (err instanceof TlsHandshakeError) return new NextTarget('4.7.5', err.message);
  if (err instanceof SmtpConnectionError) return new NextTarget('4.4.1', err.message);
  return new NextTarget('4.3.0', `local error: ${(err as Error).message}`);
}

/** Which sessions may carry a message: same server, TLS policy, credentials and source address. */
function sessionKey(
  target: Target,
  tls: TlsPolicy,
  opts: Pick<AttemptOptions, 'auth'>,
  localAddress: string | undefined,
): string {
  const who = [target.ip, target.port, target.host.toLowerCase(), opts.auth?.user ?? '', localAddress ?? ''];
  return [tls.mode, ...who].join('|');
}

/** Keys of the sessions that may carry a message to any of `targets` (see keysFor). */
export function sessionKeysFor(
  targets: Target[],
  tls: TlsPolicy,
  opts: Pick<AttemptOptions, 'auth' | 'bindAddress' | 'bindAddress6'>,
): Set<string> {
  return new Set(targets.flatMap((t) => keysFor(t, tls, opts)));
}

function sourceAddress(
  target: Target,
  opts: Pick<AttemptOptions, 'bindAddress' | 'bindAddress6'>,
): string | undefined {
  return (isIP(target.ip) === 6 ? opts.bindAddress6 : opts.bindAddress) || undefined;
}

/**
 * Keys of the sessions that may carry a message to `target` under `tls`, its own first;
 * with opportunistic TLS also one that fell back to cleartext.
 */
function keysFor(
  target: Target,
  tls: TlsPolicy,
  opts: Pick<AttemptOptions, 'auth' | 'bindAddress' | 'bindAddress6'>,
  local = sourceAddress(target, opts),
): string[] {
  const key = sessionKey(target, tls, opts, local);
  return tls.mode === 'may' ? [key, sessionKey(target, { mode: 'none' }, opts, local)] : [key];
}

/**
 * The parked session when it is connected to this target under this TLS policy (with
 * opportunistic TLS, also one that fell back to cleartext) and still answers RSET.
 */
async function takeParked(
  parked: { current: ParkedSession | null },
  keys: string[],
): Promise<SmtpClient | null> {
  const p = parked.current;
  if (!p || !keys.includes(p.key)) return null;
  parked.current = null;
  // the server may have timed the idle session out: RSET tells before the message is sent
  const r = p.client.usable ? await p.client.command('RSET').catch(() => null) : null;
  if (r?.code === 250) return p.client;
  p.client.close();
  return null;
}

/** The first word of a greeting or EHLO/HELO reply: the server's name (RFC 5321 §4.2), lower case. */
function greetingName(r: SmtpReply): string {
  return (r.lines[0] ?? '').trim().split(/\s+/)[0]!.toLowerCase();
}

/**
 * EHLO (HELO when refused) and what the reply says about the server. A refusal of HELO
 * too is the server's verdict: 5xx bounces the message (Postfix smtp_helo(): only a 5xx
 * greeting is softened, by smtp_skip_5xx_greeting), 4xx tries the next address. A server
 * that names itself with our own hostname is ourselves, reached by a route we did not
 * see: the mail would loop (Postfix: "mail for X loops back to myself", RFC 3463 X.4.6),
 * final at the best MX, and only a reason to try the next one at a backup MX.
 */
async function hello(c: SmtpClient, target: Target, opts: AttemptOptions): Promise<SmtpReply> {
  const r = await c.ehlo(opts.myhostname);
  const cmd = c.esmtp ? 'EHLO' : 'HELO';
  if (r.code < 200 || r.code >= 300) {
    const why = `host ${c.peer} refused to talk to me: ${replyText(r)} (in reply to ${cmd} command)`;
    if (r.code >= 500 && !opts.relayhost) throw new SessionVerdict(statusOf(r), why, target.host);
    throw new NextTarget(statusOf(r).replace(/^5/, '4'), why, target.host);
  }
  if (target.port === opts.loopPort && greetingName(r) === opts.myhostname.toLowerCase()) {
    opts.logger.warn({ host: target.host, ip: target.ip }, `host replied to ${cmd} with my own hostname`);
    const text = `mail for ${opts.destination ?? target.host} loops back to myself`;
    if (target.best !== false && !opts.relayhost) throw new SessionVerdict('5.4.6', text, null);
    throw new NextTarget('4.4.6', text, null);
  }
  return r;
}

/** Connects, reads the greeting, EHLO, STARTTLS as the policy says, AUTH: a session ready for MAIL FROM. */
async function openSession(target: Target, opts: AttemptOptions, tls: TlsPolicy, localAddress?: string) {
  const c = await SmtpClient.open({
    host: target.host,
    ip: target.ip,
    port: target.port,
    connectTimeoutMs: opts.connectTimeoutMs,
    replyTimeoutMs: opts.replyTimeoutMs,
    dataXferTimeoutMs: opts.dataXferTimeoutMs,
    dataDoneTimeoutMs: opts.dataDoneTimeoutMs,
    localAddress,
  });
  const mta = target.host;
  try {
    // RFC 5321 §3.1: a 554 (or 4xx) greeting: this host will not talk to us; try the next
    if (c.greeting.code !== 220) {
      throw new NextTarget(
        c.greeting.code >= 500 ? '4.4.1' : statusOf(c.greeting),
        `host ${c.peer} refused to talk to me: ${replyText(c.greeting)}`,
        mta,
      );
    }
    if (target.port === opts.loopPort && greetingName(c.greeting) === opts.myhostname.toLowerCase())
      // only a sign (Postfix warns too): some servers greet with a name not their own
      opts.logger.warn({ host: target.host, ip: target.ip }, `host greeted me with my own hostname`);
    let r = await hello(c, target, opts);
    if (tls.mode !== 'none' && c.has('STARTTLS')) {
      const tlsOpts: ConnectionOptions = {
        servername: isIP(target.host) ? undefined : target.host,
        minVersion: 'TLSv1.2',
        rejectUnauthorized: tls.mode === 'verify',
        ...(opts.ca ? { ca: opts.ca } : {}),
      };
      // opportunistic TLS resumes an earlier session with this server (see TlsSessionCache)
      const resumeKey = `${target.ip}|${target.port}|${target.host.toLowerCase()}`;
      const resume =
        tls.mode === 'may' && opts.tlsSessions
          ? {
              session: opts.tlsSessions.get(resumeKey),
              save: (session: Buffer) => opts.tlsSessions!.set(resumeKey, session),
            }
          : undefined;
      r = await c.startTls(tlsOpts, resume);
      if (r.code !== 220) {
        if (tls.mode === 'verify')
          throw new NextTarget('4.7.5', `host ${c.peer} refused STARTTLS: ${replyText(r)}`, mta);
      } else {
        opts.onTls?.(c.tls?.resumed ?? false);
        r = await hello(c, target, opts);
      }
    }
    if (tls.mode === 'verify' && !c.tls?.verified) {
      // RFC 8461 §5: with an enforce policy, no delivery without a verified TLS session
      throw new NextTarget(
        '4.7.5',
        `TLS is required (${tls.reason}), but was not offered by host ${c.peer}`,
        mta,
      );
    }
    if (opts.auth) {
      if (!c.tls) throw new NextTarget('4.7.5', `not sending credentials to ${c.peer} without TLS`, mta);
      const a = await c.auth(opts.auth.user, opts.auth.pass);
      if (a.code !== 235)
        throw new NextTarget('4.7.0', `SASL authentication failed with ${c.peer}: ${replyText(a)}`, mta);
    }
    return c;
  } catch (err) {
    c.close();
    throw err;
  }
}

/**
 * Recipients per transaction at most (Postfix: smtp_destination_recipient_limit, 50):
 * servers take at least 100 (RFC 5321 §4.5.3.1.8) and many no more; the rest would be
 * refused with 452 and wait for a retry, the last of a long list for many hours.
 */
export const RECIPIENT_LIMIT = 50;

/**
 * Sessions per delivery attempt at most (Postfix: smtp_mx_session_limit, 2): the session
 * that reaches it is the final server, whose 4xx defers. Recipients a first server put off
 * get one other server in the same attempt, not every MX host of the domain in turn.
 */
export const MX_SESSION_LIMIT = 2;

/** One outcome for every recipient (a refusal of the whole message). */
function alike(
  recipients: string[],
  kind: 'bounced' | 'deferred',
  status: string,
  reason: string,
  remoteMta: string | null,
): RecipientOutcome[] {
  return recipients.map((recipient) => ({ kind, recipient, status, reason, remoteMta }));
}

/** The 421 with which the server closed the session in a transaction, and the command it answered. */
function closingReply(res: TransactionResult): { reply: SmtpReply; command: string } | null {
  if (res.mail.code === 421) return { reply: res.mail, command: 'MAIL FROM' };
  const rcpt = res.rcpts.find((r) => r.code === 421);
  if (rcpt) return { reply: rcpt, command: 'RCPT TO' };
  return res.data?.code === 421 ? { reply: res.data, command: 'end of DATA' } : null;
}

const closingReason = (closing: { reply: SmtpReply; command: string }, c: SmtpClient) =>
  `host ${c.peer} said: ${replyText(closing.reply)} (in reply to ${closing.command} command)`;

/** Each recipient's outcome of one transaction. */
function transactionOutcomes(
  recipients: string[],
  res: TransactionResult,
  c: SmtpClient,
  mta: string,
): RecipientOutcome[] {
  // a 421 to a RCPT is the reason for every recipient that did not get its message: the
  // server closed the session with it and answered nothing more
  const closing = closingReply(res);
  const lost = (recipient: string): RecipientOutcome => ({
    kind: 'deferred',
    recipient,
    status: closing ? statusOf(closing.reply) : '4.4.2',
    reason: closing ? closingReason(closing, c) : `lost connection with ${c.peer}`,
    remoteMta: mta,
  });
  if (res.mail.code !== 250)
    return alike(
      recipients,
      res.mail.code >= 500 ? 'bounced' : 'deferred',
      statusOf(res.mail),
      `host ${c.peer} said: ${replyText(res.mail)} (in reply to MAIL FROM command)`,
      mta,
    );
  const tlsUsed = c.tls !== null;
  return recipients.map((recipient, i): RecipientOutcome => {
    const rr = res.rcpts[i];
    if (!rr) return lost(recipient);
    if (rr.code >= 300) {
      return {
        // RFC 5321 §4.5.3.1.10: 552 to RCPT meant "too many recipients" to RFC 821; it
        // is taken as temporary (as Postfix does)
        kind: rr.code >= 500 && rr.code !== 552 ? 'bounced' : 'deferred',
        recipient,
        status: rr.code === 552 ? statusOf(rr).replace(/^5/, '4') : statusOf(rr),
        reason: `host ${c.peer} said: ${replyText(rr)} (in reply to RCPT TO command)`,
        remoteMta: mta,
      };
    }
    const d = res.data;
    if (!d) return lost(recipient);
    if (d.code >= 200 && d.code < 300)
      return { kind: 'delivered', recipient, reply: replyText(d), remoteMta: mta, tls: tlsUsed };
    return {
      kind: d.code >= 500 ? 'bounced' : 'deferred',
      recipient,
      status: statusOf(d),
      reason: `host ${c.peer} said: ${replyText(d)} (in reply to end of DATA command)`,
      remoteMta: mta,
    };
  });
}

/**
 * The message to `msg.recipients` in transactions of `limit` recipients on session `c`.
 * A session lost after some batches keeps their outcomes and defers the rest (a batch is
 * never sent twice); lost in the first, the error is the caller's (the next address).
 */
async function inBatches(
  c: SmtpClient,
  msg: Message,
  params: string[],
  limit: number,
  mta: string,
  onDelivered?: (recipients: string[]) => Promise<void>,
): Promise<{ outcomes: RecipientOutcome[]; finished: boolean; reusable: boolean }> {
  const outcomes: RecipientOutcome[] = [];
  let sent = 0;
  let reason: string | null = null;
  let status = '4.4.2';
  let closing = false;
  while (sent < msg.recipients.length) {
    const batch = msg.recipients.slice(sent, sent + limit);
    let res: TransactionResult;
    try {
      // between transactions: one that did not reach the end of DATA is still open
      if (sent && (await c.command('RSET')).code !== 250) break;
      res = await c.transaction({
        from: msg.mailFrom,
        mailParams: params,
        recipients: batch,
        data: msg.data,
      });
    } catch (err) {
      if (!sent) throw err;
      reason = (err as Error).message;
      break;
    }
    // MAIL FROM refused: so it would be for every batch, and the rest shares its outcome
    const these = res.mail.code === 250 ? batch : msg.recipients.slice(sent);
    sent += these.length;
    const done = transactionOutcomes(these, res, c, mta);
    outcomes.push(...done);
    // recorded now, as Postfix marks each recipient done after its transaction
    const delivered = done.filter((o) => o.kind === 'delivered').map((o) => o.recipient);
    if (delivered.length && onDelivered) await onDelivered(delivered);
    // 421: the server is closing the session (RFC 5321 §3.8); its reply is the reason
    // the batches after this one were not sent
    const closed = closingReply(res);
    closing = closed !== null;
    if (closed) {
      reason = closingReason(closed, c);
      status = statusOf(closed.reply);
      break;
    }
  }
  for (const recipient of msg.recipients.slice(sent))
    outcomes.push({
      kind: 'deferred',
      recipient,
      status,
      reason: reason ?? `session with ${c.peer} ended before these recipients were sent`,
      remoteMta: mta,
    });
  return { outcomes, finished: sent > 0, reusable: !closing && sent === msg.recipients.length };
}

async function deliverTo(
  msg: Message,
  target: Target,
  opts: AttemptOptions,
  tls: TlsPolicy,
  parked: { current: ParkedSession | null },
  sevenBit: SevenBitCopy,
  ready: () => void,
): Promise<AttemptResult> {
  const localAddress = sourceAddress(target, opts);
  const keys = keysFor(target, tls, opts, localAddress);
  const key = keys[0]!;
  const reused = await takeParked(parked, keys);
  const c = reused ?? (await openSession(target, opts, tls, localAddress));
  opts.onSession?.(reused !== null);
  ready();
  const mta = target.host;
  // the session ended normally: it is QUIT, or handed back when it may carry another message
  let finished = false;
  let reusable = false;
  let handedBack = false;
  const result = (outcomes: RecipientOutcome[]): AttemptResult => {
    handedBack = reusable && !!opts.keepSession && c.usable;
    return { outcomes, session: handedBack ? { client: c, key } : null };
  };
  try {
    const all = (kind: 'bounced' | 'deferred', status: string, reason: string): AttemptResult =>
      result(alike(msg.recipients, kind, status, reason, mta));

    // Checks that make sending pointless: better one clear bounce now than a refusal
    // after the whole message went over the wire.
    const headers = msg.data.subarray(0, headerEnd(msg.data));
    const needsUtf8 =
      msg.smtputf8 && (hasNonAscii(msg.mailFrom) || msg.recipients.some(hasNonAscii) || hasNonAscii(headers));
    if (needsUtf8 && !c.has('SMTPUTF8')) {
      finished = reusable = true; // nothing was sent
      // RFC 6531 §3.2: never send an internationalized message to a server without SMTPUTF8
      return all('bounced', '5.6.7', `SMTPUTF8 is required, but was not offered by host ${c.peer}`);
    }
    let data = msg.data;
    let eightBit = hasNonAscii(data);
    // a message declared 8BITMIME or BINARYMIME may label parts 8bit or binary, and carry
    // lines too long for SMTP in them, even when all its bytes are 7-bit
    const declared = (msg.body ?? '7BIT') !== '7BIT';
    if ((eightBit || declared) && !c.has('8BITMIME')) {
      // RFC 6152 §3: 8-bit data only to servers that offer 8BITMIME; the message goes as
      // 7 bit instead (Postfix: disable_mime_output_conversion = no), once per attempt
      const seven = await (sevenBit.current ??= downgradeTo7Bit(msg.data));
      if (seven.kind === 'converted') {
        data = seven.data;
        eightBit = false;
      } else if (eightBit) {
        finished = reusable = true; // nothing was sent
        // RFC 3463 X.6.3: conversion required but not supported
        return all(
          'bounced',
          '5.6.3',
          `message has 8-bit content that cannot be converted to 7 bit (${seven.reason}), ` +
            `and host ${c.peer} does not offer 8BITMIME`,
        );
      }
      // 7-bit bytes that cannot be converted go as they are, as they did before
    }
    const size = Number(c.extensions.get('SIZE') ?? 0);
    if (c.has('SIZE') && size > 0 && data.length > size) {
      finished = reusable = true; // nothing was sent
      // RFC 1870 §6.2 / RFC 3463 X.3.4
      return all(
        'bounced',
        '5.3.4',
        `message size ${data.length} exceeds size limit ${size} of server ${c.peer}`,
      );
    }
    const params: string[] = [];
    if (c.has('SIZE')) params.push(`SIZE=${data.length}`);
    if (eightBit) params.push('BODY=8BITMIME');
    if (needsUtf8) params.push('SMTPUTF8');

    const sent = await inBatches(
      c,
      { ...msg, data },
      params,
      opts.recipientLimit ?? RECIPIENT_LIMIT,
      mta,
      opts.onDelivered,
    );
    finished = sent.finished;
    reusable = sent.reusable;
    return result(sent.outcomes);
  } finally {
    if (!finished) c.close();
    else if (!handedBack) await c.quit();
  }
}
