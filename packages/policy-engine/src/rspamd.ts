import { Agent, request } from 'undici';

/**
 * rspamd is asked once per message: its connections are kept alive and reused (the
 * global fetch would set up a request/response stream pair and often a connection per
 * scan, which cost the policy service more CPU than the scan's own answer).
 */
const scanner = new Agent({ keepAliveTimeout: 4_000, connections: 64 });

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

/** rspamd's HTTP protocol (`POST /checkv2`), the envelope as request headers. */
export async function rspamdCheck(
  baseUrl: string,
  message: Buffer,
  env: RspamdEnvelope,
  timeoutMs: number,
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
  const res = await request(new URL('/checkv2', baseUrl), {
    dispatcher: scanner,
    method: 'POST',
    headers,
    body: message,
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (res.statusCode !== 200) {
    await res.body.dump();
    throw new Error(`rspamd answered HTTP ${res.statusCode}`);
  }
  const body = (await res.body.json()) as Partial<RspamdResult>;
  if (typeof body.action !== 'string' || typeof body.score !== 'number')
    throw new Error('rspamd answered without action/score');
  return {
    action: body.action,
    score: body.score,
    required_score: body.required_score ?? 0,
    symbols: body.symbols ?? {},
  };
}

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
  const res = await fetch(new URL(kind === 'spam' ? '/learnspam' : '/learnham', controllerUrl), {
    method: 'POST',
    headers,
    body: message,
    signal: AbortSignal.timeout(timeoutMs),
  });
  // 208 or "already learned": the classifier is where we want it
  if (!res.ok && res.status !== 208) {
    const text = await res.text().catch(() => '');
    if (/already learned/i.test(text)) return;
    throw new Error(`rspamd learn${kind} answered HTTP ${res.status} ${text.slice(0, 200)}`);
  }
}
