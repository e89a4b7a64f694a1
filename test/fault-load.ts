import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import nodemailer from 'nodemailer';
import { folderDir } from '@mailyard/mailstore';
import { maildirNew, waitFor } from '@mailyard/testkit';

// The load of the fault tests: messages sent by real SMTP clients that retry a 4xx or a
// lost connection as an MTA would, every attempt tagged, so that the mailboxes can be
// checked afterwards against what each attempt was told.

export interface LoadOptions {
  port: number;
  count: number;
  from: string;
  recipients: string[];
  /** Simultaneous SMTP sessions. */
  sessions?: number;
  /** Give up on a message after this long (a test deadline, not a retry policy). */
  deadlineMs?: number;
}

type Outcome = 'accepted' | 'tempfailed' | 'refused' | 'no-reply';

export interface Load {
  /** Resolves when every message was accepted (or refused, or ran out of time). */
  done: Promise<void>;
  /** Attempts so far by outcome. */
  count(outcome: Outcome): number;
  /** attempt id (m<i>.<k>) -> outcome */
  readonly attempts: Map<string, Outcome>;
  /** Refusals (5xx), with the reply, for the assertion message. */
  readonly refusals: string[];
}

export function startLoad(opts: LoadOptions): Load {
  const attempts = new Map<string, Outcome>();
  const refusals: string[] = [];
  const sessions = opts.sessions ?? 8;
  const deadline = Date.now() + (opts.deadlineMs ?? 90_000);
  const transport = nodemailer.createTransport({
    host: '127.0.0.1',
    port: opts.port,
    pool: true,
    maxConnections: sessions,
    maxMessages: Infinity,
    ignoreTLS: true,
    connectionTimeout: 5000,
    socketTimeout: 30_000,
  });
  let next = 0;
  const sendOne = async (i: number) => {
    const to = opts.recipients[i % opts.recipients.length]!;
    for (let k = 0; Date.now() < deadline; k++) {
      const id = `m${i}.${k}`;
      try {
        await transport.sendMail({
          envelope: { from: opts.from, to: [to] },
          raw: `From: ${opts.from}\r\nTo: ${to}\r\nSubject: fault m${i}\r\nX-Fault-Attempt: ${id}\r\n\r\nmessage ${i}\r\n`,
        });
        attempts.set(id, 'accepted');
        return;
      } catch (err) {
        const e = err as { responseCode?: number; response?: string };
        if (e.responseCode && e.responseCode >= 500) {
          attempts.set(id, 'refused');
          refusals.push(`${id}: ${e.response}`);
          return;
        }
        attempts.set(id, e.responseCode ? 'tempfailed' : 'no-reply');
        await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** k, 1000)));
      }
    }
  };
  const worker = async () => {
    while (next < opts.count) await sendOne(next++);
  };
  const done = Promise.all(Array.from({ length: sessions }, worker)).then(() => transport.close());
  return {
    done,
    attempts,
    refusals,
    count: (o) => [...attempts.values()].filter((x) => x === o).length,
  };
}

export interface Tally {
  sent: number;
  accepted: number;
  tempfailed: number;
  'no-reply': number;
  delivered: number;
  bounced: number;
  lost: number;
  duplicated: number;
  /** Attempts that got no reply (the connection died after DATA) and were filed anyway. */
  'filed-without-reply': number;
}

/** Reads the mailboxes: filed copies of each attempt, and DSNs returned to the sender. */
export function tally(
  load: Load,
  opts: { maildir: string; recipients: string[]; from: string; count: number },
): Tally {
  const filed = new Map<string, number>();
  for (const a of opts.recipients) {
    for (const f of maildirNew(folderDir(opts.maildir, a, 'INBOX'))) {
      const id = /^X-Fault-Attempt: (\S+)/m.exec(readFileSync(f, 'utf8'))?.[1];
      if (id) filed.set(id, (filed.get(id) ?? 0) + 1);
    }
  }
  const bounced = new Set<string>();
  for (const f of maildirNew(folderDir(opts.maildir, opts.from, 'INBOX'))) {
    const id = /^X-Fault-Attempt: (\S+)/m.exec(readFileSync(f, 'utf8'))?.[1];
    if (id) bounced.add(id);
  }
  const accepted = [...load.attempts].filter(([, o]) => o === 'accepted').map(([id]) => id);
  return {
    sent: opts.count,
    accepted: accepted.length,
    tempfailed: load.count('tempfailed'),
    'no-reply': load.count('no-reply'),
    delivered: accepted.filter((id) => filed.has(id)).length,
    bounced: accepted.filter((id) => bounced.has(id)).length,
    lost: accepted.filter((id) => !filed.has(id) && !bounced.has(id)).length,
    duplicated: [...filed.values()].filter((n) => n > 1).length,
    'filed-without-reply': [...load.attempts].filter(([id, o]) => o === 'no-reply' && filed.has(id)).length,
  };
}

/**
 * Waits until every accepted attempt is filed or bounced (or the deadline passes), and
 * a little longer for late duplicates; then returns the tally.
 */
export async function settle(
  load: Load,
  opts: { maildir: string; recipients: string[]; from: string; count: number; timeoutMs?: number },
): Promise<Tally> {
  await waitFor(() => tally(load, opts).lost === 0, {
    timeoutMs: opts.timeoutMs ?? 60_000,
    intervalMs: 250,
    what: 'every accepted message filed or bounced',
  }).catch(() => undefined);
  // a redelivered copy would show up now
  await new Promise((r) => setTimeout(r, 1000));
  return tally(load, opts);
}

/** One line for the test output, to be copied into the issue. */
export function describeTally(name: string, t: Tally): string {
  return `${name}: ${Object.entries(t)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ')}`;
}

/**
 * Settles, prints the tally (for the issue note) and checks the promise: no client got
 * a 5xx, every message was accepted in the end, none lost, none filed twice.
 */
export async function assertNothingLost(
  t: { diagnostic(message: string): void },
  name: string,
  load: Load,
  opts: { maildir: string; recipients: string[]; from: string; count: number },
): Promise<Tally> {
  const tally = await settle(load, opts);
  t.diagnostic(describeTally(name, tally));
  assert.deepEqual(load.refusals, [], 'no 5xx for a valid recipient');
  assert.equal(tally.accepted, opts.count, 'every message accepted in the end');
  assert.equal(tally.lost, 0, 'lost');
  assert.equal(tally.duplicated, 0, 'duplicated');
  return tally;
}
