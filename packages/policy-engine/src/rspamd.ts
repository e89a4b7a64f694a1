import { request } from 'node:http';
import { connectTimedOut, connectWithin, withScanSlot } from './scanner-limits.js';

/**
 * rspamd is asked once per message, over node:http: rspamd's normal worker closes the
 * connection after each reply, so there is nothing to keep alive, and a client that
 * pools connections pays for it at every scan (undici answers every close with an error
 * object, and its stack, which cost the policy service more CPU than the rest of the
 * scan's request).
 */

/** rspamd's reply is a few kilobytes of JSON; anything far larger is not rspamd's. */
const MAX_REPLY = 4 * 1024 * 1024;

export interface RspamdResult {
  /** reject, soft reject, rewrite subject, add header, greylist or no action */
  action: string;
  score: number;
  required_score: number;
  symbols: Record<string, { name?: string; score?: number }>;
}

export interface RspamdEnvelope {
  ip: string;
  helo: string;
  hostname: string | null;
  from: string;
  rcpts: string[];
  queueId: string | null;
  user: string | null;
}

/**
 * rspamd's HTTP protocol (`POST /checkv2`), the envelope as request headers. `signal`
 * ends the request before its own deadline (the session stopped waiting): its connection
 * is closed and its slot freed, and the call rejects with the signal's reason.
 */
export async function rspamdCheck(
  baseUrl: string,
  message: Buffer,
  env: RspamdEnvelope,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<RspamdResult> {
  const headers: Record<string, string | string[]> = {
    IP: env.ip,
    Helo: env.helo || env.ip,
    From: env.from,
    Pass: 'all',
  };
  if (env.hostname) headers.Hostname = env.hostname;
  if (env.queueId) headers['Queue-Id'] = env.queueId;
  if (env.user) headers.User = env.user;
  if (env.rcpts.length) headers.Rcpt = env.rcpts;
  const url = new URL('/checkv2', baseUrl);
  const { status, body } = await withScanSlot(
    baseUrl,
    timeoutMs,
    () => unanswered(timeoutMs),
    (left) => post(url, headers, message, left, timeoutMs, signal),
    signal,
  );
  if (status !== 200) throw new Error(`rspamd answered HTTP ${status}`);
  const parsed = JSON.parse(body.toString('utf8')) as Partial<RspamdResult>;
  if (typeof parsed.action !== 'string' || typeof parsed.score !== 'number')
    throw new Error('rspamd answered without action/score');
  return {
    action: parsed.action,
    score: parsed.score,
    required_score: parsed.required_score ?? 0,
    symbols: parsed.symbols ?? {},
  };
}

function unanswered(timeoutMs: number): Error {
  return new Error(`rspamd did not answer within ${timeoutMs} ms`);
}

/** One scan: the message POSTed with the envelope headers; rspamd's status and body. */
function post(
  url: URL,
  headers: Record<string, string | string[]>,
  message: Buffer,
  leftMs: number,
  timeoutMs: number,
  stop?: AbortSignal,
): Promise<{ status: number; body: Buffer }> {
  // what is left of the scan's time after the wait for a slot; errors name the whole of it
  const deadline = AbortSignal.timeout(leftMs);
  return new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
    const req = request(
      {
        host: url.hostname.replace(/^\[|\]$/g, ''),
        port: url.port || 80,
        path: url.pathname,
        method: 'POST',
        agent: false,
        headers: { ...headers, 'Content-Length': message.length },
        signal: stop ? AbortSignal.any([deadline, stop]) : deadline,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_REPLY) req.destroy(new Error(`rspamd answered more than ${MAX_REPLY} bytes`));
          else chunks.push(c);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    let connected = false;
    req.once('socket', (sock) => {
      if (!sock.connecting) return void (connected = true);
      sock.once('connect', () => (connected = true));
      connectWithin(sock, leftMs, 'rspamd', (err) => req.destroy(err));
    });
    // the deadline before even a connection: as the connection timeout
    req.on('error', (err: Error) =>
      reject(
        err.name !== 'AbortError'
          ? err
          : stop?.aborted && !deadline.aborted
            ? (stop.reason as Error)
            : connected
              ? unanswered(timeoutMs)
              : connectTimedOut('rspamd', timeoutMs),
      ),
    );
    req.end(message);
  });
}

/**
 * Pauses before the retries of a learn that rspamd answered with a server error: its
 * sqlite Bayes backend answers "database is locked" while another of its workers writes.
 */
const LEARN_RETRY_PAUSES_MS = [500, 2000];

/** Trains rspamd's Bayes classifier through its controller (`/learnspam`, `/learnham`). */
export async function rspamdLearn(
  controllerUrl: string,
  kind: 'spam' | 'ham',
  message: Buffer,
  password: string | undefined,
  timeoutMs: number,
): Promise<void> {
  const headers: Record<string, string> = {};
  if (password) headers.Password = password;
  for (const pause of [...LEARN_RETRY_PAUSES_MS, null]) {
    const res = await fetch(new URL(kind === 'spam' ? '/learnspam' : '/learnham', controllerUrl), {
      method: 'POST',
      headers,
      body: message,
      signal: AbortSignal.timeout(timeoutMs),
    });
    // 208 or "already learned": the classifier is where we want it
    if (res.ok || res.status === 208) return;
    const text = await res.text().catch(() => '');
    if (/already learned/i.test(text)) return;
    if (res.status < 500 || pause === null)
      throw new Error(`rspamd learn${kind} answered HTTP ${res.status} ${text.slice(0, 200)}`);
    await new Promise((r) => setTimeout(r, pause));
  }
}
