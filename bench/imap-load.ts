// `pnpm bench:imap --concurrent 50`: many clients at once on a few accounts, each doing
// what a mail client does all day, against one server for a fixed time.
import { Client } from './imap-client.js';

/** What one client does next, with its weight in the mix. */
export const MIX: [Kind, number][] = [
  ['SELECT', 10],
  ['FETCH', 25],
  ['FETCH BODY', 15],
  ['STORE', 15],
  ['APPEND', 15],
  ['IDLE', 10],
  ['EXPUNGE', 10],
];
export type Kind = 'SELECT' | 'FETCH' | 'FETCH BODY' | 'STORE' | 'APPEND' | 'IDLE' | 'EXPUNGE';

export interface LoadResult {
  seconds: number;
  commands: number;
  /** Tagged NO/BAD, dropped connections, by command. */
  errors: Record<string, number>;
  /** Samples (ms) by command. */
  latency: Record<string, number[]>;
  /** First few error lines, to see what went wrong. */
  examples: string[];
}

export interface LoadOptions {
  port: number;
  clients: number;
  accounts: string[];
  password: string;
  seconds: number;
  /**
   * Commands per second each client starts at most (0: each starts the next at once). A
   * client that starts its next command as soon as one ends offers the server more load
   * the faster it answers, IDLE's notifications included: latencies of two servers are
   * comparable only under the same offered load.
   */
  pace?: number;
  /** Another mix than MIX (`--mix STORE:1`: what one kind of command costs). */
  mix?: [Kind, number][];
  /**
   * Seconds of the same mix before the measured ones, counted for errors only: a server just
   * started compiles its code and reads every folder's state for the first time then.
   */
  warmup?: number;
  /** Called when the measured seconds begin (after the logins and any warm-up). */
  onMeasure?: () => void;
}

function message(i: number, account: string): string {
  const body = `Hello,\r\n\r\n${'A line of a message appended by the load benchmark. '.repeat(30)}\r\n`;
  return [
    `From: "Load ${i}" <load${i}@example.net>`,
    `To: <${account}>`,
    `Subject: Appended message ${i}`,
    `Date: Tue, 14 Nov 2023 22:13:20 +0000`,
    `Message-ID: <load-${process.pid}-${i}@example.net>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    '',
    body,
  ].join('\r\n');
}

/** Runs the mix on `clients` connections for `seconds`; every command is timed. */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const res: LoadResult = { seconds: o.seconds, commands: 0, errors: {}, latency: {}, examples: [] };
  const note = (k: string, ms: number) => (res.latency[k] ??= []).push(ms);
  const fail = (k: string, line: string) => {
    res.errors[k] = (res.errors[k] ?? 0) + 1;
    if (res.examples.length < 10) res.examples.push(`${k}: ${line.slice(0, 200)}`);
  };
  const mix = o.mix ?? MIX;
  const total = mix.reduce((s, [, w]) => s + w, 0);
  let appended = 0;
  const clients = await Promise.all(
    Array.from({ length: o.clients }, async (_, i) => {
      const account = o.accounts[i % o.accounts.length]!;
      const c = await Client.open(o.port);
      await c.cmd(`LOGIN ${account} ${o.password}`);
      return { c, account, exists: 0, mine: [] as number[] };
    }),
  );
  const measureFrom = Date.now() + (o.warmup ?? 0) * 1000;
  const end = measureFrom + o.seconds * 1000;
  /** Whether a command starting now is one of the measured ones (not the warm-up's). */
  const measured = () => Date.now() >= measureFrom;
  let started = measureFrom;
  const measuring = setTimeout(
    () => {
      started = Date.now();
      o.onMeasure?.();
    },
    Math.max(0, measureFrom - Date.now()),
  );
  /** Follows the message count the server told this client. */
  const track = (s: { exists: number }, out: string) => {
    for (const m of out.matchAll(/^\* (\d+) (EXISTS|EXPUNGE)\r$/gm)) {
      if (m[2] === 'EXISTS') s.exists = Number(m[1]);
      else s.exists--;
    }
  };
  await Promise.all(
    clients.map(async (s) => {
      const { c } = s;
      const run = async (kind: string, text: string): Promise<string | null> => {
        const counted = measured();
        const t = performance.now();
        const r = await c.reply(c.send(text));
        if (counted) {
          note(kind, performance.now() - t);
          res.commands++;
        }
        track(s, r.out);
        if (r.status !== 'OK') {
          fail(kind, r.line);
          return null;
        }
        return r.out;
      };
      const gap = o.pace ? 1000 / o.pace : 0;
      // clients start spread over one gap, not all at once
      let due = performance.now() + Math.random() * gap;
      try {
        await run('SELECT', 'SELECT INBOX');
        while (Date.now() < end) {
          if (gap) {
            const now = performance.now();
            if (due > now) await new Promise((r) => setTimeout(r, due - now));
            // a client that fell behind does not make up for it in a burst
            due = Math.max(due, performance.now() - gap) + gap;
          }
          let pick = Math.random() * total;
          const kind = mix.find(([, w]) => (pick -= w) < 0)![0];
          const n = Math.max(1, s.exists);
          const some = 1 + Math.floor(Math.random() * n);
          switch (kind) {
            case 'SELECT':
              await run(kind, 'SELECT INBOX');
              break;
            case 'FETCH':
              // the newest 50, as a client shows the top of the list
              if (s.exists) await run(kind, `FETCH ${Math.max(1, s.exists - 49)}:* (UID FLAGS ENVELOPE)`);
              break;
            case 'FETCH BODY':
              if (s.exists) await run(kind, `FETCH ${some} (UID BODY.PEEK[])`);
              break;
            case 'STORE':
              if (s.exists)
                await run(kind, `STORE ${some} ${Math.random() < 0.5 ? '+' : '-'}FLAGS (\\Seen \\Flagged)`);
              break;
            case 'APPEND': {
              const msg = message(++appended, s.account);
              const out = await run(kind, `APPEND INBOX (\\Seen) {${Buffer.byteLength(msg)}+}\r\n${msg}`);
              const uid = out && /APPENDUID \d+ (\d+)/.exec(out);
              if (uid) s.mine.push(Number(uid[1]));
              break;
            }
            case 'IDLE': {
              const counted = measured();
              const t = performance.now();
              const tag = c.send('IDLE');
              if ((await c.waitFor(/^\+[^\r]*\r\n/m, 10_000)) === null) {
                fail(kind, 'no continuation');
                break;
              }
              // until something happens in the folder, at most a second
              const seen = await c.waitFor(/^\* \d+ (EXISTS|EXPUNGE)\r\n/m, 1000);
              if (seen) track(s, seen);
              const done = performance.now();
              c.write('DONE\r\n');
              const r = await c.reply(tag);
              track(s, r.out);
              if (counted) {
                res.commands++;
                note('IDLE (DONE to OK)', performance.now() - done);
                note('IDLE (wait)', done - t);
              }
              if (r.status !== 'OK') fail(kind, r.line);
              break;
            }
            case 'EXPUNGE': {
              // what this client appended goes again, so the folder stays the same size
              const uids = s.mine.splice(0);
              if (!uids.length) break;
              if (await run('UID STORE', `UID STORE ${uids.join(',')} +FLAGS.SILENT (\\Deleted)`))
                await run('UID EXPUNGE', `UID EXPUNGE ${uids.join(',')}`);
              break;
            }
          }
        }
        await run('LOGOUT', 'LOGOUT').catch(() => undefined);
      } catch (err) {
        fail('connection', (err as Error).message);
      } finally {
        c.close();
      }
    }),
  );
  clearTimeout(measuring);
  res.seconds = (Date.now() - started) / 1000;
  return res;
}

export function percentile(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
