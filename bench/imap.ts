// `pnpm bench:imap`: the same IMAP workload against Mailyard's retrieval service and
// Dovecot (Debian's dovecot-imapd), both reading one Maildir on this machine.
//   logins per second with 10 parallel clients (plaintext and STARTTLS),
//   SELECT + FETCH 1:* (FLAGS ENVELOPE) of an N-message INBOX, cold, warm, and on a
//   restarted server (which finds the index it wrote),
//   FETCH of 200 full bodies (BODY.PEEK[]), repeated.
// Options: --messages 10000  --seconds 5  --only mailyard|dovecot
//   --concurrent 50   instead: that many clients on --accounts 10 accounts (of --messages
//                     1000 each) doing a mail client's mix of SELECT, FETCH, STORE, APPEND,
//                     IDLE and EXPUNGE for --seconds 30: commands/s, latency per command
//                     (p50, p99, max) and errors
//   --pace 14         with --concurrent: each client starts at most 14 commands a second,
//                     so both servers get the same offered load (see imap-load.ts)
//   --mix STORE:1     with --concurrent: another mix (kinds of imap-load.ts's MIX with
//                     weights), e.g. one kind alone to see what it costs per command
//   --warmup 5        with --concurrent: that many seconds of the mix first, not measured
//                     (errors still count): the figures of a server past its first seconds
//   --cpu-prof <dir>  write a V8 CPU profile of the retrieval process into <dir>
//   --dist            run the esbuild bundle (services/retrieval/dist/main.js) as the
//                     container image does (`pnpm build` first), not the sources with tsx,
//                     which compiles each module at its first use
//   --skip-logins     only the mailbox workload (keeps a profile on the FETCH paths)
// Next to wall-clock times, the CPU time the server's processes used in each phase
// (user + system, from /proc) is printed: on a shared machine it moves far less.
// The Maildir goes under $TMPDIR: on an ext4 without a journal (as some VM images'
// root), creating files slows down as deleted inodes pile up, and the figures drift
// within a run; TMPDIR on a freshly made, journaled ext4 gives a mail server's usual case.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { Directory } from '@mailyard/directory';
import { accountDir } from '@mailyard/mailstore';
import { Client } from './imap-client.js';
import { MIX, percentile, runLoad, type Kind } from './imap-load.js';
import { dovecotInstalled, dovecotPath, startDovecot as startDovecotServer } from '@mailyard/testkit';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : def;
};
const CONCURRENT = Number(arg('concurrent', '0'));
const N = Number(arg('messages', CONCURRENT ? '1000' : '10000'));
const SECONDS = Number(arg('seconds', CONCURRENT ? '30' : '5'));
const ONLY = arg('only', '');
const CPU_PROF = arg('cpu-prof', '');
const PACE = Number(arg('pace', '0'));
const WARMUP = Number(arg('warmup', '0'));
if (!(WARMUP >= 0)) {
  console.error(`--warmup: "${arg('warmup', '0')}" is not a number of seconds`);
  process.exit(2);
}
const KINDS = new Set(MIX.map(([k]) => k));
const CUSTOM_MIX = arg('mix', '')
  ? arg('mix', '')
      .split(',')
      .map((x): [Kind, number] => {
        const [k, w] = x.split(':');
        if (!KINDS.has(k as Kind) || !(Number(w) > 0)) {
          console.error(`--mix: "${x}" is not KIND:WEIGHT, with KIND one of ${[...KINDS].join(', ')}`);
          process.exit(2);
        }
        return [k as Kind, Number(w)];
      })
  : undefined;
const SKIP_LOGINS = process.argv.includes('--skip-logins');
const DIST = process.argv.includes('--dist');
const ACCOUNT = 'bench@bench.test';
/** Every account the run uses: one, or --accounts of them under --concurrent. */
const ACCOUNTS = CONCURRENT
  ? Array.from({ length: Number(arg('accounts', '10')) }, (_, i) => `bench${i}@bench.test`)
  : [ACCOUNT];
const PASSWORD = 'correct-horse-battery-staple-42';
const root = join(tmpdir(), `mailyard-bench-${process.pid}`);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

function fillMaildir(): void {
  for (const a of ACCOUNTS) fillAccount(a);
}

function fillAccount(account: string): void {
  const dir = accountDir(root, account);
  for (const d of ['cur', 'new', 'tmp']) mkdirSync(join(dir, d), { recursive: true });
  const t0 = 1_700_000_000;
  for (let i = 1; i <= N; i++) {
    const body = `Hello ${i},\r\n\r\n${'This is line of a typical message body. '.repeat(20)}\r\n`;
    const msg = Buffer.from(
      [
        `Return-Path: <sender${i % 50}@example.net>`,
        `Received: from mx.example.net by mail.bench.test; Tue, 14 Nov 2023 22:13:20 +0000`,
        `From: "Sender ${i % 50}" <sender${i % 50}@example.net>`,
        `To: Bench <${account}>`,
        `Subject: Benchmark message number ${i}`,
        `Date: Tue, 14 Nov 2023 22:13:20 +0000`,
        `Message-ID: <bench-${i}@example.net>`,
        'MIME-Version: 1.0',
        'Content-Type: text/plain; charset=utf-8',
        '',
        body,
      ].join('\r\n'),
    );
    writeFileSync(join(dir, 'cur', `${t0 + i}.M${i}P1.bench,S=${msg.length}:2,${i % 3 ? 'S' : ''}`), msg);
  }
}

async function loginRate(port: number, tls: boolean): Promise<number> {
  let count = 0;
  const end = Date.now() + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: 10 }, async () => {
      while (Date.now() < end) {
        const c = await Client.open(port);
        if (tls) await c.startTls();
        await c.cmd(`LOGIN ${ACCOUNT} ${PASSWORD}`);
        await c.cmd('LOGOUT').catch(() => undefined);
        c.close();
        count++;
      }
    }),
  );
  return count / SECONDS;
}

const TICK_MS = 1000 / Number(spawnSync('getconf', ['CLK_TCK']).stdout?.toString().trim() || 100);

/** CPU time (user + system, ms) of a process and its descendants, from /proc. */
function cpuMs(pid: number): number {
  let total = 0;
  const visit = (p: number) => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'latin1');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // utime, stime, and those of reaped children (Dovecot's imap processes that ended)
      total += (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * TICK_MS;
      for (const t of readdirSync(`/proc/${p}/task`)) {
        const kids = readFileSync(`/proc/${p}/task/${t}/children`, 'latin1').trim();
        for (const k of kids ? kids.split(' ') : []) visit(Number(k));
      }
    } catch {
      // the process ended meanwhile
    }
  };
  visit(pid);
  return total;
}

/** Wall-clock and server CPU time of one phase, in ms. */
async function timed(server: Server, fn: () => Promise<unknown>): Promise<[number, number]> {
  const c = cpuMs(server.pid);
  const t = process.hrtime.bigint();
  await fn();
  return [Number(process.hrtime.bigint() - t) / 1e6, cpuMs(server.pid) - c];
}

interface Server {
  port: number;
  /** Root of the server's process tree, for CPU time. */
  pid: number;
  stop: () => Promise<void>;
}

async function workload(name: string, server: Server): Promise<Record<string, number>> {
  const c = await Client.open(server.port);
  await c.cmd(`LOGIN ${ACCOUNT} ${PASSWORD}`);
  const cold = await timed(server, async () => {
    await c.cmd('SELECT INBOX');
    await c.cmd('FETCH 1:* (FLAGS ENVELOPE)');
  });
  await c.cmd('UNSELECT');
  const warm = await timed(server, async () => {
    await c.cmd('SELECT INBOX');
    await c.cmd('FETCH 1:* (FLAGS ENVELOPE)');
  });
  const fetchOnly = await timed(server, () => c.cmd('FETCH 1:* (FLAGS ENVELOPE)'));
  const thunderbird = await timed(server, () => c.cmd(THUNDERBIRD_FETCH));
  await c.cmd('FETCH 1:200 BODY.PEEK[]');
  // a run takes a few milliseconds: the median of 15 runs, and the CPU time of all of them
  const runs: number[] = [];
  const [, bodiesCpu] = await timed(server, async () => {
    for (let i = 0; i < 15; i++) runs.push((await timed(server, () => c.cmd('FETCH 1:200 BODY.PEEK[]')))[0]);
  });
  const bodies = runs.sort((a, b) => a - b)[7]!;
  c.close();
  const r: Record<string, number> = {
    'SELECT+FETCH ENVELOPE cold (ms)': cold[0],
    'SELECT+FETCH ENVELOPE warm (ms)': warm[0],
    'FETCH 1:* (FLAGS ENVELOPE) warm (ms)': fetchOnly[0],
    'Thunderbird listing (HEADER.FIELDS) warm (ms)': thunderbird[0],
    'FETCH 200 bodies, median of 15 (ms)': bodies,
    'SELECT+FETCH ENVELOPE cold, server CPU (ms)': cold[1],
    'SELECT+FETCH ENVELOPE warm, server CPU (ms)': warm[1],
    'FETCH 1:* (FLAGS ENVELOPE) warm, server CPU (ms)': fetchOnly[1],
    'Thunderbird listing (HEADER.FIELDS) warm, server CPU (ms)': thunderbird[1],
    'FETCH 200 bodies, server CPU per run (ms)': bodiesCpu / 15,
  };
  if (!SKIP_LOGINS) {
    r['logins/s, 10 clients'] = await loginRate(server.port, false);
    r['STARTTLS logins/s, 10 clients'] = await loginRate(server.port, true);
  }
  console.error(`${name}: done`);
  return r;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((r) => child.once('exit', () => r()));
}

async function startMailyard(): Promise<Server> {
  const prefix = `bench-${process.pid}:`;
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { keyPrefix: prefix });
  const dir = new Directory(redis);
  await dir.addDomain('bench.test');
  for (const a of ACCOUNTS) await dir.addUser(a, PASSWORD);
  redis.disconnect();
  const [imap, imaps, pop3, pop3s, http] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  const prof = CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${CPU_PROF}`] : [];
  const child = spawn(
    process.execPath,
    [
      ...prof,
      ...(DIST
        ? ['--enable-source-maps', 'services/retrieval/dist/main.js']
        : ['--conditions=development', '--import', 'tsx', 'services/retrieval/src/main.ts']),
    ],
    {
      env: {
        ...process.env,
        REDIS_PREFIX: prefix,
        MAILDIR_ROOT: root,
        IMAP_PORT: String(imap),
        IMAPS_PORT: String(imaps),
        POP3_PORT: String(pop3),
        POP3S_PORT: String(pop3s),
        HTTP_PORT: String(http),
        LISTEN_ADDRESS: '127.0.0.1',
        PLAINTEXT_AUTH_NETWORKS: '127.0.0.1/32',
        MAIL_MAX_USER_CONNECTIONS: '1000',
        LOG_LEVEL: 'warn',
        MYHOSTNAME: 'imap.bench.test',
      },
      stdio: ['ignore', 'inherit', 'inherit'],
    },
  );
  await waitPort(imap);
  // the first worker listens while the others still start (and make their TLS keys): a
  // figure "after a restart" is taken once every worker is ready, or it counts their start
  await waitReady(http);
  return {
    port: imap,
    pid: child.pid!,
    stop: async () => {
      child.kill('SIGTERM');
      // the CPU profile is written at exit
      await exited(child);
      const r = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
      await r
        .keys(prefix + '*')
        .then((ks) => (ks.length ? r.del(...ks) : 0))
        .finally(() => r.disconnect());
    },
  };
}

async function startDovecot(): Promise<Server | null> {
  if (!dovecotInstalled()) {
    console.error('dovecot not installed (apt-get install dovecot-imapd): skipped');
    return null;
  }
  const d = await startDovecotServer({
    dir: join(root, '..', `dovecot-${process.pid}`),
    // <root>/<domain>/<local>, as accountDir lays them out
    mailLocation: `maildir:${dovecotPath(root)}/%d/%n`,
    mailRoots: [root],
    users: ACCOUNTS.map((user) => ({ user, password: PASSWORD })),
    extraConfig: 'mail_max_userip_connections = 1000',
    loginProcesses: 4,
    keep: !!process.env.BENCH_KEEP,
  });
  return { port: d.port, pid: d.pid, stop: () => d.stop() };
}

/** Until the instance's /readyz (the primary's: every worker ready) answers 200. */
async function waitReady(port: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`retrieval not ready on ${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function waitPort(port: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), r(true)));
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

console.error(`filling ${N} messages into ${root}`);
if (!CONCURRENT) fillMaildir();
const results: Record<string, Record<string, number>> = {};

/** Thunderbird's listing of a folder it has not seen (its first sync). */
const THUNDERBIRD_FETCH =
  'UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID ' +
  'Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])';

/** SELECT and one listing on a server just started (its index files kept): wall and CPU ms. */
async function afterRestart(start: () => Promise<Server | null>, fetch: string): Promise<[number, number]> {
  const again = (await start())!;
  try {
    const c = await Client.open(again.port);
    await c.cmd(`LOGIN ${ACCOUNT} ${PASSWORD}`);
    const r = await timed(again, async () => {
      await c.cmd('SELECT INBOX');
      await c.cmd(fetch);
    });
    c.close();
    return r;
  } finally {
    await again.stop();
  }
}

/** The workload on a fresh server, then a listing on a restarted one (its index kept), twice. */
async function run(name: string, start: () => Promise<Server | null>): Promise<void> {
  const first = await start();
  if (!first) return;
  try {
    results[name] = await workload(name, first);
  } finally {
    await first.stop();
  }
  const [ms, cpu] = await afterRestart(start, 'FETCH 1:* (FLAGS ENVELOPE)');
  results[name]['SELECT+FETCH ENVELOPE after a restart (ms)'] = ms;
  results[name]['SELECT+FETCH ENVELOPE after a restart, server CPU (ms)'] = cpu;
  const [tbMs, tbCpu] = await afterRestart(start, THUNDERBIRD_FETCH);
  results[name]['SELECT+Thunderbird listing after a restart (ms)'] = tbMs;
  results[name]['SELECT+Thunderbird listing after a restart, server CPU (ms)'] = tbCpu;
}

/** The concurrent mix on a freshly filled store and a fresh server. */
async function runConcurrent(name: string, start: () => Promise<Server | null>): Promise<void> {
  rmSync(root, { recursive: true, force: true });
  fillMaildir();
  const server = await start();
  if (!server) return;
  try {
    let cpu = cpuMs(server.pid);
    const r = await runLoad({
      port: server.port,
      clients: CONCURRENT,
      accounts: ACCOUNTS,
      password: PASSWORD,
      seconds: SECONDS,
      pace: PACE,
      mix: CUSTOM_MIX,
      warmup: WARMUP,
      onMeasure: () => (cpu = cpuMs(server.pid)),
    });
    const out: Record<string, number> = {
      'commands/s': r.commands / r.seconds,
      'server CPU (ms per command)': (cpuMs(server.pid) - cpu) / r.commands,
      errors: Object.values(r.errors).reduce((a, b) => a + b, 0),
    };
    for (const [k, xs] of Object.entries(r.latency).sort()) {
      out[`${k}: count`] = xs.length;
      out[`${k}: p50 (ms)`] = percentile(xs, 50);
      out[`${k}: p99 (ms)`] = percentile(xs, 99);
      out[`${k}: max (ms)`] = percentile(xs, 100);
    }
    for (const [k, n] of Object.entries(r.errors)) out[`errors: ${k}`] = n;
    for (const e of r.examples) console.error(`${name}: ${e}`);
    results[name] = out;
    console.error(`${name}: done`);
  } finally {
    await server.stop();
  }
}

try {
  if (CONCURRENT) {
    if (ONLY !== 'dovecot') await runConcurrent('mailyard', startMailyard);
    if (ONLY !== 'mailyard') await runConcurrent('dovecot', startDovecot);
  } else {
    if (ONLY !== 'dovecot') await run('mailyard', startMailyard);
    if (ONLY !== 'mailyard') await run('dovecot', startDovecot);
  }
} finally {
  if (!process.env.BENCH_KEEP) rmSync(root, { recursive: true, force: true });
}
const rows = [...new Set([...Object.keys(results.mailyard ?? {}), ...Object.keys(results.dovecot ?? {})])];
console.log(
  CONCURRENT
    ? `\nIMAP benchmark, ${CONCURRENT} clients on ${ACCOUNTS.length} accounts of ${N} messages, ${SECONDS}s` +
        (PACE ? `, at most ${PACE} commands/s per client` : '') +
        (WARMUP ? `, after ${WARMUP}s of warm-up` : '') +
        (CUSTOM_MIX ? `, mix ${CUSTOM_MIX.map((k) => k.join(':')).join(',')}` : '')
    : `\nIMAP benchmark, ${N}-message INBOX, ${SECONDS}s login runs (password hash: see packages/directory)`,
);
console.log(['metric', 'mailyard', 'dovecot', 'mailyard/dovecot'].join(' | '));
for (const r of rows) {
  const a = results.mailyard?.[r];
  const b = results.dovecot?.[r];
  const f = (x?: number) => (x === undefined ? '-' : x.toFixed(1));
  console.log([r, f(a), f(b), a !== undefined && b ? (a / b).toFixed(2) : '-'].join(' | '));
}
setTimeout(() => process.exit(0), 1000);
