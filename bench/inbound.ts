/**
 * Inbound benchmark: SMTP on mta-inbound -> RabbitMQ quorum queue -> delivery -> fsynced
 * Maildir, each service in its own process as in production.
 *
 *   pnpm bench:inbound [--messages 5000] [--concurrency 20] [--size 10240]
 *                      [--per-connection 1] [--accounts 10] [--warmup 500]
 *                      [--smtp-source] [--profile DIR] [--keep] [--uv-threadpool N] [--dist]
 *                      [--policy [--no-rate-limits] [--no-scanners] [--no-local]]
 *
 * --policy runs the platform as `pnpm start` does: the policy service as a third process,
 * mta-inbound asking it at every stage, the default restriction lists, DNS answered by the
 * testkit's loopback DNS server (the client has forward-confirmed reverse DNS, the sender
 * domain resolves), and rspamd and clamd on loopback as the tests start them when they
 * are installed (--no-scanners leaves them out). The client then is not in MYNETWORKS,
 * greets as mx.sender.test and sends as sender@sender.test. --no-rate-limits removes the
 * check_rate entries from the lists (the defaults before they exempted FCrDNS clients
 * refused the load after a minute). It also prints the policy figures: requests per
 * message, Redis round trips per message, DNS queries per message and the policy
 * service's decision latency.
 *
 * What is printed, and how it is measured:
 *  - accepted msgs/s: measured messages / (last `250` after DATA - start of the run).
 *    In --smtp-source mode the run ends when smtp-source exits.
 *  - delivered msgs/s: measured messages / (newest file in new/ - start of the run).
 *  - latency, end of DATA -> file in new/ (own client only): the client notes the wall
 *    clock when it writes the final `.` of each message and reads the queue id from the
 *    `250 ... queued as <id>` reply; the Maildir file name carries the same queue id
 *    (`...Q<id>R...`). The moment a file entered new/ is its inode change time: rename(2)
 *    sets ctime on Linux, and the delivery service renames tmp/ -> new/ only after the
 *    file's fsync. So the figure covers SMTP, publish confirm, queue, consume, write and
 *    fsync, but not the fsync of new/ that follows the rename. The kernel stamps ctime
 *    from its coarse clock (one tick, 4 ms at HZ=250), so single values can read up to
 *    one tick early; p50/p99 over thousands of messages are not affected beyond that.
 *    ctime is written by the kernel at the rename, so the figure does not depend on how
 *    busy this process is when it looks, and neither does the end time above.
 *  - latency from the delivery service's own histogram (mailyard_delivery_latency_seconds:
 *    acceptance -> file in new/ including the directory fsync), read from /metrics before
 *    and after the run and interpolated within its buckets; the only latency figure in
 *    --smtp-source mode, where the client's end of DATA is not visible to us.
 *
 * Both modes send one message per connection by default (as smtp-source does without -d):
 * connect, greeting, EHLO, MAIL, RCPT, DATA, QUIT, one command at a time. A warm-up run
 * (not counted, files removed) comes first so that JIT compilation, the first mkdir of
 * each Maildir and the broker's queue creation stay out of the figures.
 *
 * Every run uses a fresh RabbitMQ vhost, its own Redis key prefix and a temporary Maildir
 * root, and removes them at the end (--keep leaves the Maildir in place).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs, promisify } from 'node:util';
import { Redis } from 'ioredis';
import { Directory } from '@mailyard/directory';
import { folderDir } from '@mailyard/mailstore';
import { DEFAULT_RESTRICTIONS, PolicyRules, RESTRICTION_LISTS } from '@mailyard/policy-rules';
import {
  createVhost,
  reverseName,
  startClamd,
  startDnsServer,
  startRspamd,
  type Scanner,
  type TestDnsServer,
} from '@mailyard/testkit';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '..');
const DOMAIN = 'bench.test';
const SENDER = `sender@${DOMAIN}`;
/** With --policy: a sender domain that resolves, and the client's FCrDNS name. */
const POLICY_SENDER = 'sender@sender.test';
const POLICY_HELO = 'mx.sender.test';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Wall clock in ms with sub-ms resolution (same clock as file timestamps). */
const now = (): number => performance.timeOrigin + performance.now();

interface Options {
  messages: number;
  concurrency: number;
  size: number;
  perConnection: number;
  accounts: number;
  warmup: number;
  smtpSource: boolean;
  profile: string | undefined;
  keep: boolean;
  /** UV_THREADPOOL_SIZE for the delivery process (its fsyncs occupy libuv's pool; default 4). */
  uvThreadpool: number | undefined;
  /** Run the built bundles (services/X/dist/main.js) as the container image does. */
  dist: boolean;
  /** The policy service with the default lists, DNS and (unless noScanners) rspamd and clamd. */
  policy: boolean;
  noRateLimits: boolean;
  noScanners: boolean;
  /** Every stage asked of the policy service (POLICY_LOCAL_DECISIONS=no), as before. */
  noLocal: boolean;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      messages: { type: 'string', default: '5000' },
      concurrency: { type: 'string', default: '20' },
      size: { type: 'string', default: '10240' },
      'per-connection': { type: 'string', default: '1' },
      accounts: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '500' },
      'smtp-source': { type: 'boolean', default: false },
      profile: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'uv-threadpool': { type: 'string' },
      dist: { type: 'boolean', default: false },
      policy: { type: 'boolean', default: false },
      'no-rate-limits': { type: 'boolean', default: false },
      'no-scanners': { type: 'boolean', default: false },
      'no-local': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: pnpm bench:inbound [--messages N] [--concurrency C] [--size BYTES] [--per-connection K]\n' +
        '                          [--accounts A] [--warmup W] [--smtp-source] [--profile DIR] [--keep]\n' +
        '                          [--uv-threadpool N] [--dist] [--policy [--no-rate-limits] [--no-scanners] [--no-local]]\n',
    );
    process.exit(0);
  }
  const int = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) {
      process.stderr.write(`bench: --${name} expects a whole number >= ${min}, got "${v}"\n`);
      process.exit(2);
    }
    return n;
  };
  const smtpSource = values['smtp-source'];
  return {
    messages: int('messages', values.messages, 1),
    concurrency: int('concurrency', values.concurrency, 1),
    size: int('size', values.size, 1),
    perConnection: int('per-connection', values['per-connection'], 1),
    // smtp-source sends to a single address
    accounts: smtpSource ? 1 : int('accounts', values.accounts, 1),
    warmup: int('warmup', values.warmup, 0),
    smtpSource,
    profile: values.profile ? resolve(values.profile) : undefined,
    keep: values.keep,
    uvThreadpool:
      values['uv-threadpool'] === undefined ? undefined : int('uv-threadpool', values['uv-threadpool'], 1),
    dist: values.dist,
    policy: values.policy,
    noRateLimits: values['no-rate-limits'],
    noScanners: values['no-scanners'],
    noLocal: values['no-local'],
  };
}

const accountName = (i: number, total: number): string =>
  total === 1 ? `user@${DOMAIN}` : `user${i + 1}@${DOMAIN}`;

// ---------------------------------------------------------------- services as processes

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => res(port));
    });
  });
}

interface Child {
  name: string;
  proc: ChildProcess;
  httpPort: number;
  exited: Promise<void>;
  stopping: boolean;
}

function startService(
  name: 'mta-inbound' | 'delivery' | 'policy',
  env: Record<string, string>,
  httpPort: number,
  profile: string | undefined,
  dist: boolean,
): Child {
  // --dist: the esbuild bundle, run as the container image runs it (pnpm build first)
  // the same V8 flags as deploy/Dockerfile and scripts/start.mjs
  const args = dist ? ['--enable-source-maps'] : ['--conditions=development', '--import', 'tsx'];
  // one directory per service: the loader thread writes a profile of its own
  if (profile) args.push('--cpu-prof', '--cpu-prof-dir', join(profile, name));
  args.push(join(ROOT, 'services', name, ...(dist ? ['dist', 'main.js'] : ['src', 'main.ts'])));
  const proc = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, ...env, HTTP_PORT: String(httpPort) },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const child: Child = { name, proc, httpPort, exited: Promise.resolve(), stopping: false };
  child.exited = new Promise<void>((res) =>
    proc.once('exit', (code, signal) => {
      if (!child.stopping) process.stderr.write(`bench: ${name} exited (code ${code}, signal ${signal})\n`);
      res();
    }),
  );
  return child;
}

async function stopService(c: Child): Promise<void> {
  if (c.proc.exitCode !== null || c.proc.signalCode !== null) return;
  c.stopping = true;
  c.proc.kill('SIGTERM');
  const timer = setTimeout(() => c.proc.kill('SIGKILL'), 15_000);
  await c.exited;
  clearTimeout(timer);
}

async function waitReady(c: Child, deadlineMs = 30_000): Promise<void> {
  const until = Date.now() + deadlineMs;
  while (Date.now() < until) {
    if (c.proc.exitCode !== null) throw new Error(`${c.name} exited with code ${c.proc.exitCode}`);
    try {
      const res = await fetch(`http://127.0.0.1:${c.httpPort}/readyz`);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`${c.name} not ready after ${deadlineMs / 1000} s`);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- a minimal SMTP client

interface Reply {
  code: number;
  text: string;
}

/** One SMTP session, one command at a time (no pipelining), like smtp-source. */
class SmtpSession {
  private buf = '';
  private lines: string[] = [];
  private queue: Reply[] = [];
  private waiter: { resolve: (r: Reply) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;

  private constructor(private readonly sock: Socket) {
    sock.setNoDelay(true);
    sock.setEncoding('latin1');
    sock.on('data', (chunk: string) => this.onData(chunk));
    sock.on('error', (err) => this.fail(err));
    sock.on('close', () => this.fail(new Error('connection closed')));
  }

  static open(port: number): Promise<SmtpSession> {
    return new Promise((res, rej) => {
      const sock = connect({ port, host: '127.0.0.1' });
      sock.once('connect', () => res(new SmtpSession(sock)));
      sock.once('error', rej);
    });
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    let i: number;
    while ((i = this.buf.indexOf('\r\n')) !== -1) {
      const line = this.buf.slice(0, i);
      this.buf = this.buf.slice(i + 2);
      this.lines.push(line);
      if (line.length <= 3 || line[3] === ' ') {
        const reply = { code: Number(line.slice(0, 3)), text: this.lines.join('\n') };
        this.lines = [];
        if (this.waiter) {
          const w = this.waiter;
          this.waiter = null;
          w.resolve(reply);
        } else this.queue.push(reply);
      }
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(err);
    }
  }

  reply(): Promise<Reply> {
    const r = this.queue.shift();
    if (r) return Promise.resolve(r);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  async expect(code: number, line?: string): Promise<Reply> {
    if (line !== undefined) this.sock.write(line);
    const r = await this.reply();
    if (r.code !== code) throw new Error(`expected ${code} to ${line?.trim() ?? 'greeting'}, got: ${r.text}`);
    return r;
  }

  write(data: string): void {
    this.sock.write(data);
  }

  close(): void {
    this.sock.on('error', () => undefined);
    this.sock.end();
  }
}

/** A message of `size` body bytes in 78-character lines (no line starts with a dot). */
function messageBody(size: number): string {
  const line = 'x'.repeat(76) + '\r\n';
  let body = line.repeat(Math.floor(size / line.length));
  const rest = size - body.length;
  if (rest > 2) body += 'y'.repeat(rest - 2) + '\r\n';
  else body += 'z'.repeat(rest);
  return body.endsWith('\r\n') ? body : body + '\r\n';
}

interface ClientResult {
  /** queue id -> wall clock (ms) when the final dot was written */
  endOfData: Map<string, number>;
  lastAccepted: number;
  failures: string[];
}

/** Who the client says it is: the sender and the EHLO name (null: client<N>.bench.test). */
interface Identity {
  sender: string;
  helo: string | null;
}

const identityOf = (opts: Pick<Options, 'policy'>): Identity =>
  opts.policy ? { sender: POLICY_SENDER, helo: POLICY_HELO } : { sender: SENDER, helo: null };

async function runClient(
  port: number,
  opts: Pick<Options, 'concurrency' | 'perConnection' | 'size' | 'accounts' | 'policy'>,
  count: number,
): Promise<ClientResult> {
  const { sender, helo } = identityOf(opts);
  const body = messageBody(opts.size);
  const result: ClientResult = { endOfData: new Map(), lastAccepted: 0, failures: [] };
  let next = 0;
  const worker = async (w: number): Promise<void> => {
    while (next < count) {
      let s: SmtpSession | null = null;
      try {
        s = await SmtpSession.open(port);
        await s.expect(220);
        await s.expect(250, `EHLO ${helo ?? `client${w}.bench.test`}\r\n`);
        for (let k = 0; k < opts.perConnection && next < count; k++) {
          const i = next++;
          const rcpt = accountName(i % opts.accounts, opts.accounts);
          await s.expect(250, `MAIL FROM:<${sender}>\r\n`);
          await s.expect(250, `RCPT TO:<${rcpt}>\r\n`);
          await s.expect(354, 'DATA\r\n');
          const head =
            `From: <${sender}>\r\nTo: <${rcpt}>\r\nSubject: bench ${i}\r\n` +
            `Message-ID: <bench.${i}.${w}@client.bench.test>\r\nDate: ${new Date().toUTCString()}\r\n\r\n`;
          s.write(head + body);
          const eod = now();
          const r = await s.expect(250, '.\r\n');
          const id = /queued as (\S+)/.exec(r.text)?.[1];
          if (!id) throw new Error(`no queue id in: ${r.text}`);
          result.endOfData.set(id, eod);
          result.lastAccepted = now();
        }
        await s.expect(221, 'QUIT\r\n');
      } catch (err) {
        result.failures.push((err as Error).message);
        if (result.failures.length > 50)
          throw new Error(`too many failures: ${[...new Set(result.failures)].slice(0, 3).join('; ')}`);
      } finally {
        s?.close();
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, (_, w) => worker(w)));
  return result;
}

async function runSmtpSource(port: number, opts: Options, count: number): Promise<void> {
  const args = ['-s', String(opts.concurrency), '-l', String(opts.size), '-m', String(count)];
  if (opts.perConnection > 1) args.push('-d');
  const { sender, helo } = identityOf(opts);
  if (helo) args.push('-M', helo);
  args.push('-f', sender, '-t', accountName(0, 1), `127.0.0.1:${port}`);
  const p = spawn('smtp-source', args, { stdio: ['ignore', 'inherit', 'inherit'] });
  const code = await new Promise<number | null>((res, rej) => {
    p.once('error', rej);
    p.once('exit', (c) => res(c));
  });
  if (code !== 0) throw new Error(`smtp-source exited with code ${code}`);
}

/** Median time from TCP connect to the 220 greeting: shows whether an early-talker wait is on. */
async function greetingLatency(port: number, samples = 5): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < samples; i++) {
    const t = now();
    const s = await SmtpSession.open(port);
    await s.expect(220);
    times.push(now() - t);
    await s.expect(221, 'QUIT\r\n');
    s.close();
  }
  return quantile(
    times.sort((a, b) => a - b),
    0.5,
  );
}

// ---------------------------------------------------------------- Maildir observation

interface MaildirFile {
  path: string;
  queueId: string | null;
  ctimeMs: number;
}

function listNew(dirs: string[]): string[] {
  const files: string[] = [];
  for (const d of dirs) {
    try {
      for (const f of readdirSync(join(d, 'new'))) files.push(join(d, 'new', f));
    } catch {
      // folder not created yet
    }
  }
  return files;
}

/** Polls until `count` files are in the new/ directories; the poll interval does not enter any figure. */
async function waitForFiles(dirs: string[], count: number, deadlineMs: number): Promise<string[]> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const files = listNew(dirs);
    if (files.length >= count) return files;
    if (Date.now() > until) throw new Error(`only ${files.length} of ${count} messages delivered in time`);
    await sleep(100);
  }
}

function statFiles(files: string[]): MaildirFile[] {
  return files.map((path) => {
    const st = statSync(path, { bigint: true });
    return {
      path,
      queueId: /\.Q(\w{16})R[0-9a-f]{12}\./.exec(path)?.[1] ?? null,
      ctimeMs: Number(st.ctimeNs) / 1e6,
    };
  });
}

// ---------------------------------------------------------------- CPU accounting

/** CPU seconds (user + system, and system alone) a process has used so far, from /proc (Linux). */
function processCpu(pid: number | undefined): { all: number; sys: number } {
  try {
    if (!pid) throw new Error('no pid');
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const sys = Number(fields[12]) / CLOCK_TICKS;
    return { all: Number(fields[11]) / CLOCK_TICKS + sys, sys };
  } catch {
    return { all: NaN, sys: NaN };
  }
}

/** Busy and total CPU seconds of the whole machine, from /proc/stat. */
function machineCpu(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: (total - idle) / CLOCK_TICKS, total: total / CLOCK_TICKS };
}

const CLOCK_TICKS = 100;

async function pidOf(name: string): Promise<number | undefined> {
  try {
    const { stdout } = await run('pgrep', ['-o', '-x', name]);
    return Number(stdout.trim()) || undefined;
  } catch {
    return undefined;
  }
}

/** The content scanners, named as their processes are: each one's CPU counts all its workers. */
const SCANNER_PROCESSES = ['rspamd', 'clamd'];

/** CPU seconds used so far by every live process of this name (all its workers). */
function namedCpu(name: string): number {
  let sum = 0;
  for (const dir of readdirSync('/proc')) {
    if (!/^\d+$/.test(dir)) continue;
    try {
      const stat = readFileSync(`/proc/${dir}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      if (comm !== name) continue;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      sum += (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
    } catch {
      // the process ended between the listing and the read
    }
  }
  return sum;
}

interface CpuSnapshot {
  procs: { all: number; sys: number }[];
  /** CPU seconds of each of SCANNER_PROCESSES, in that order */
  scanners: number[];
  self: number;
  machine: { busy: number; total: number };
}

function cpuSnapshot(pids: (number | undefined)[]): CpuSnapshot {
  const u = process.cpuUsage();
  return {
    procs: pids.map(processCpu),
    scanners: SCANNER_PROCESSES.map(namedCpu),
    self: (u.user + u.system) / 1e6,
    machine: machineCpu(),
  };
}

// ---------------------------------------------------------------- statistics

function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

type Buckets = Map<number, number>;

/** Cumulative bucket counts of a histogram from a Prometheus text exposition. */
async function histogram(port: number, name: string, labels = ''): Promise<Buckets> {
  const text = await metricsText(port);
  const out: Buckets = new Map();
  // the series whose other labels (after le, as prom-client writes them) are exactly `labels`
  const re = new RegExp(`^${name}_bucket\\{le="([^"]+)"${labels ? `,${labels}` : ''}\\} (\\d+)`, 'gm');
  for (const m of text.matchAll(re)) out.set(m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2]));
  return out;
}

async function metricsText(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

/** The sum of every series of a counter (or a histogram's _count) whose labels contain `match`. */
async function counterSum(port: number, name: string, match = ''): Promise<number> {
  const text = await metricsText(port);
  let sum = 0;
  const re = new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`, 'gm');
  for (const m of text.matchAll(re)) if ((m[1] ?? '').includes(match)) sum += Number(m[2]);
  return sum;
}

/** Quantile of the difference of two cumulative histograms, linear within a bucket. */
function histogramQuantile(before: Buckets, after: Buckets, q: number): number {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const cum = bounds.map((b) => (after.get(b) ?? 0) - (before.get(b) ?? 0));
  const total = cum[cum.length - 1] ?? 0;
  if (!total) return NaN;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) {
    if (cum[i]! >= rank) {
      const lo = i === 0 ? 0 : bounds[i - 1]!;
      const hi = bounds[i]!;
      if (hi === Infinity) return lo;
      const below = i === 0 ? 0 : cum[i - 1]!;
      return lo + ((hi - lo) * (rank - below)) / Math.max(cum[i]! - below, 1);
    }
  }
  return NaN;
}

const fmt = (n: number, digits = 1): string => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');

// ---------------------------------------------------------------- --policy

/**
 * The world of a --policy run: a loopback DNS server where the client (127.0.0.1) has
 * forward-confirmed reverse DNS and the sender domain has an MX, rspamd and clamd when
 * installed, the default lists (less check_rate with --no-rate-limits), and the
 * settings of the policy service and of mta-inbound.
 */
async function startPolicyWorld(
  redis: Redis,
  prefix: string,
  opts: Options,
): Promise<{
  dns: TestDnsServer;
  scanners: Scanner[];
  env: Record<string, string>;
  inboundEnv: Record<string, string>;
}> {
  const dns = await startDnsServer(
    {
      [reverseName('127.0.0.1')]: { PTR: [POLICY_HELO] },
      [POLICY_HELO]: { A: ['127.0.0.1'] },
      'sender.test': { MX: [{ priority: 10, exchange: POLICY_HELO }], TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
      // negative answers carry an SOA, as every real zone's do, so resolvers may keep them
    },
    { negativeTtl: 300 },
  );
  const scanners: Scanner[] = [];
  const scannerEnv: Record<string, string> = {};
  if (!opts.noScanners) {
    const [clamd, rspamd] = await Promise.allSettled([startClamd(), startRspamd(dns.address)]);
    if (clamd.status === 'fulfilled') {
      scanners.push(clamd.value);
      scannerEnv.CLAMD_URL = clamd.value.url;
    } else process.stdout.write(`no clamd: ${(clamd.reason as Error).message.split('\n')[0]}\n`);
    if (rspamd.status === 'fulfilled') {
      scanners.push(rspamd.value);
      scannerEnv.RSPAMD_URL = rspamd.value.url;
    } else process.stdout.write(`no rspamd: ${(rspamd.reason as Error).message.split('\n')[0]}\n`);
  }
  const rules = new PolicyRules(redis, prefix);
  if (opts.noRateLimits) {
    for (const l of RESTRICTION_LISTS) {
      const entries = DEFAULT_RESTRICTIONS[l].filter((e) => !e.startsWith('check_rate '));
      if (entries.length !== DEFAULT_RESTRICTIONS[l].length) await rules.set(l, entries);
    }
  }
  process.stdout.write(
    `policy: default lists${opts.noRateLimits ? ' without check_rate' : ''}, ` +
      `DNS ${dns.address}, scanners: ${Object.keys(scannerEnv).join(', ') || 'none'}\n`,
  );
  // the client is not one of ours: every restriction applies to it
  const common = { DNS_SERVERS: dns.address, MYNETWORKS: '192.0.2.0/24' };
  return {
    dns,
    scanners,
    env: { ...common, ...scannerEnv, POLICY_DELEGATION_ENABLED: 'no' },
    inboundEnv: {
      ...common,
      POLICY_ENABLED: 'yes',
      POLICY_LOCAL_DECISIONS: opts.noLocal ? 'no' : 'yes',
      SMTPD_PEERNAME_LOOKUP: 'yes',
      // one address sends everything here; Postfix has no connection rate limit by default
      SMTPD_CLIENT_CONNECTION_RATE_LIMIT: '0',
    },
  };
}

interface PolicyFigures {
  requests: number;
  local: number;
  /** The policy service's, and mta-inbound's for the stages it decides. */
  redisRoundTrips: number;
  localRedisRoundTrips: number;
  dnsQueries: number;
  decision: Buckets;
  rpc: Map<string, Buckets>;
  transaction: Buckets;
}

const STAGES = ['connect', 'mail', 'rcpt', 'data'];

async function policyFigures(
  inboundHttp: number,
  policyHttp: number,
  dns: TestDnsServer | null,
): Promise<PolicyFigures> {
  const rpc = new Map<string, Buckets>();
  for (const stage of STAGES)
    rpc.set(
      stage,
      await histogram(
        inboundHttp,
        'mailyard_mta_inbound_policy_seconds',
        `stage="${stage}",outcome="answered"`,
      ),
    );
  return {
    // RPCs as mta-inbound makes them; stages it decides itself (POLICY_LOCAL_DECISIONS) apart
    requests: await counterSum(inboundHttp, 'mailyard_mta_inbound_policy_decisions_total', 'where="service"'),
    local: await counterSum(inboundHttp, 'mailyard_mta_inbound_policy_decisions_total', 'where="local"'),
    redisRoundTrips: await counterSum(policyHttp, 'mailyard_policy_redis_round_trips_total'),
    localRedisRoundTrips: await counterSum(
      inboundHttp,
      'mailyard_mta_inbound_local_policy_redis_round_trips_total',
    ),
    dnsQueries: dns?.queries.length ?? 0,
    decision: await histogram(policyHttp, 'mailyard_policy_decision_seconds', 'stage="data"'),
    rpc,
    transaction: await histogram(inboundHttp, 'mailyard_mta_inbound_policy_transaction_seconds'),
  };
}

function printPolicyFigures(a: PolicyFigures, b: PolicyFigures, messages: number): void {
  const per = (x: number, y: number) => fmt((y - x) / messages, 2);
  process.stdout.write(
    `policy per message: ${per(a.requests, b.requests)} requests to the policy service, ` +
      `${per(a.local, b.local)} stages decided in mta-inbound, ` +
      `${per(a.redisRoundTrips + a.localRedisRoundTrips, b.redisRoundTrips + b.localRedisRoundTrips)} ` +
      `Redis round trips (policy decisions: ${per(a.localRedisRoundTrips, b.localRedisRoundTrips)} ` +
      `in mta-inbound, ${per(a.redisRoundTrips, b.redisRoundTrips)} in the policy service), ` +
      `${per(a.dnsQueries, b.dnsQueries)} DNS queries\n`,
  );
  const ms = (x: Buckets, y: Buckets, q: number) => fmt(histogramQuantile(x, y, q) * 1000, 2);
  const stages = STAGES.map((st) => {
    const [x, y] = [a.rpc.get(st)!, b.rpc.get(st)!];
    return `${st} p50 ${ms(x, y, 0.5)} p99 ${ms(x, y, 0.99)}`;
  });
  process.stdout.write(`policy RPC as mta-inbound waits for it (ms): ${stages.join(', ')}\n`);
  process.stdout.write(
    `DATA decision inside the policy service (ms): p50 ${ms(a.decision, b.decision, 0.5)}, ` +
      `p99 ${ms(a.decision, b.decision, 0.99)}\n`,
  );
  if (b.transaction.size)
    process.stdout.write(
      `policy time per transaction in mta-inbound (ms, connect to end of DATA): ` +
        `p50 ${ms(a.transaction, b.transaction, 0.5)}, p99 ${ms(a.transaction, b.transaction, 0.99)}\n`,
    );
}

// ---------------------------------------------------------------- the run

async function main(): Promise<void> {
  const opts = parseOptions();
  if (opts.smtpSource) {
    try {
      await run('sh', ['-c', 'command -v smtp-source']);
    } catch {
      throw new Error('smtp-source not found (Debian: apt-get install postfix)');
    }
  }
  const vhost = await createVhost('bench');
  const prefix = `bench:${randomBytes(4).toString('hex')}:`;
  const redis = new Redis(REDIS_URL, { keyPrefix: prefix });
  const tmp = mkdtempSync(join(tmpdir(), 'mailyard-bench-'));
  const maildirRoot = join(tmp, 'maildir');
  const children: Child[] = [];
  const scanners: Scanner[] = [];
  let dns: TestDnsServer | null = null;
  try {
    const directory = new Directory(redis);
    await directory.addDomain(DOMAIN);
    const accounts = Array.from({ length: opts.accounts }, (_, i) => accountName(i, opts.accounts));
    for (const a of accounts) await directory.addUser(a, 'correct horse battery staple');
    const dirs = accounts.map((a) => folderDir(maildirRoot, a, 'INBOX'));

    const [smtpPort, inboundHttp, deliveryHttp, policyHttp] = [
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
    ];
    const env: Record<string, string> = {
      AMQP_URL: vhost.url,
      REDIS_URL,
      REDIS_PREFIX: prefix,
      MAILDIR_ROOT: maildirRoot,
      LISTEN_ADDRESS: '127.0.0.1',
      LOG_LEVEL: 'warn',
      MYHOSTNAME: 'mx.bench.test',
      SMTP_PORT: String(smtpPort),
      // no DNS in the loop: the Received header shows the client's address only
      SMTPD_PEERNAME_LOOKUP: 'no',
    };
    let policyEnv: Record<string, string> | null = null;
    if (opts.policy) {
      const p = await startPolicyWorld(redis, prefix, opts);
      dns = p.dns;
      scanners.push(...p.scanners);
      policyEnv = { ...env, ...p.env };
      Object.assign(env, p.inboundEnv);
    }
    // delivery first, so the queue has its consumer before mail arrives
    const deliveryEnv = opts.uvThreadpool ? { ...env, UV_THREADPOOL_SIZE: String(opts.uvThreadpool) } : env;
    const delivery = startService('delivery', deliveryEnv, deliveryHttp, opts.profile, opts.dist);
    children.push(delivery);
    const policy = policyEnv ? startService('policy', policyEnv, policyHttp, opts.profile, opts.dist) : null;
    if (policy) children.push(policy);
    for (const c of children) await waitReady(c);
    // mta-inbound is ready once the policy service consumes its queue
    const inbound = startService('mta-inbound', env, inboundHttp, opts.profile, opts.dist);
    children.push(inbound);
    await waitReady(inbound);

    const greet = await greetingLatency(smtpPort);
    process.stdout.write(`greeting after connect: ${fmt(greet, 2)} ms (median of 5)\n`);
    if (greet >= 50)
      throw new Error(`greeting took ${fmt(greet)} ms: an early-talker wait is on (POSTSCREEN_GREET_WAIT)`);

    const send = async (count: number): Promise<ClientResult | null> => {
      if (opts.smtpSource) {
        await runSmtpSource(smtpPort, opts, count);
        return null;
      }
      return runClient(smtpPort, opts, count);
    };

    // Warm-up files stay until the end: deleting thousands of files just before the run
    // makes ext4 (without a journal, as on this VM) skip each recently freed inode when
    // it allocates the next ones, which would charge the run for the clean-up.
    let warm = new Set<string>();
    if (opts.warmup) {
      const w = await send(opts.warmup);
      if (w?.failures.length) throw new Error(`warm-up failed: ${w.failures[0]}`);
      warm = new Set(await waitForFiles(dirs, opts.warmup, 60_000));
    }

    const mode = opts.smtpSource ? 'smtp-source' : 'own client';
    process.stdout.write(
      `sending ${opts.messages} messages of ${opts.size} bytes, ${opts.concurrency} sessions, ` +
        `${opts.perConnection} per connection, ${opts.accounts} mailboxes (${mode})\n`,
    );
    const histBefore = await histogram(deliveryHttp, 'mailyard_delivery_latency_seconds');
    const acceptBefore = await histogram(inboundHttp, 'mailyard_mta_inbound_accept_latency_seconds');
    const cpuNames = ['mta-inbound', 'delivery', ...(policy ? ['policy'] : []), 'rabbitmq', 'redis'];
    const pids = [
      inbound.proc.pid,
      delivery.proc.pid,
      ...(policy ? [policy.proc.pid] : []),
      await pidOf('beam.smp'),
      await pidOf('redis-server'),
    ];
    const policyBefore = policy ? await policyFigures(inboundHttp, policyHttp, dns) : null;
    const cpuBefore = cpuSnapshot(pids);
    const start = now();
    const client = await send(opts.messages);
    const acceptedAt = client ? client.lastAccepted : now();
    const failures = client?.failures ?? [];
    // messages that got their 250 (smtp-source stops at the first failure)
    const expected = client ? client.endOfData.size : opts.messages;
    if (failures.length)
      process.stdout.write(
        `${failures.length} sessions failed: ${[...new Set(failures)].slice(0, 3).join('; ')}\n`,
      );
    const files = statFiles(
      (await waitForFiles(dirs, warm.size + expected, 120_000)).filter((f) => !warm.has(f)),
    );
    const cpuAfter = cpuSnapshot(pids);
    const policyAfter = policy ? await policyFigures(inboundHttp, policyHttp, dns) : null;
    const histAfter = await histogram(deliveryHttp, 'mailyard_delivery_latency_seconds');
    const acceptAfter = await histogram(inboundHttp, 'mailyard_mta_inbound_accept_latency_seconds');
    const lastFile = Math.max(...files.map((f) => f.ctimeMs));

    const acceptedRate = expected / ((acceptedAt - start) / 1000);
    const deliveredRate = files.length / ((lastFile - start) / 1000);
    process.stdout.write(
      `accepted:  ${fmt(acceptedRate, 0)} msgs/s (${expected} in ${fmt((acceptedAt - start) / 1000, 2)} s)\n`,
    );
    process.stdout.write(
      `delivered: ${fmt(deliveredRate, 0)} msgs/s (${files.length} in new/ after ${fmt((lastFile - start) / 1000, 2)} s)\n`,
    );
    let p50 = NaN;
    let p99 = NaN;
    if (client) {
      const lat = files
        .map((f) => (f.queueId ? f.ctimeMs - (client.endOfData.get(f.queueId) ?? NaN) : NaN))
        .filter((x) => Number.isFinite(x))
        .sort((a, b) => a - b);
      p50 = quantile(lat, 0.5);
      p99 = quantile(lat, 0.99);
      process.stdout.write(
        `end of DATA -> file in new/: p50 ${fmt(p50)} ms, p99 ${fmt(p99)} ms, max ${fmt(lat[lat.length - 1] ?? NaN)} ms (${lat.length} messages, file ctime)\n`,
      );
    }
    const h50 = histogramQuantile(histBefore, histAfter, 0.5) * 1000;
    const h99 = histogramQuantile(histBefore, histAfter, 0.99) * 1000;
    process.stdout.write(
      `acceptance -> new/ + dir fsync (delivery histogram, interpolated): p50 ${fmt(h50)} ms, p99 ${fmt(h99)} ms\n`,
    );
    process.stdout.write(
      `end of DATA -> 250 (publish confirm; mta-inbound histogram, interpolated): ` +
        `p50 ${fmt(histogramQuantile(acceptBefore, acceptAfter, 0.5) * 1000)} ms, ` +
        `p99 ${fmt(histogramQuantile(acceptBefore, acceptAfter, 0.99) * 1000)} ms\n`,
    );
    // Where the CPU went: per message for each process, and how busy the whole machine
    // was (other work on the machine shows as the difference).
    const perMsg = (a: number, b: number) => fmt(((b - a) * 1000) / files.length, 2);
    const parts = cpuNames.map((n, i) => {
      const [a, b] = [cpuBefore.procs[i]!, cpuAfter.procs[i]!];
      return `${n} ${perMsg(a.all, b.all)} (sys ${perMsg(a.sys, b.sys)})`;
    });
    if (!opts.smtpSource) parts.push(`client ${perMsg(cpuBefore.self, cpuAfter.self)}`);
    if (scanners.length)
      SCANNER_PROCESSES.forEach((n, i) =>
        parts.push(`${n} ${perMsg(cpuBefore.scanners[i]!, cpuAfter.scanners[i]!)}`),
      );
    process.stdout.write(`CPU ms per message: ${parts.join(', ')}\n`);
    const busy = cpuAfter.machine.busy - cpuBefore.machine.busy;
    const total = cpuAfter.machine.total - cpuBefore.machine.total;
    process.stdout.write(`machine CPU busy during the run: ${fmt((100 * busy) / total, 0)}% of all cores\n`);
    if (policyBefore && policyAfter) printPolicyFigures(policyBefore, policyAfter, files.length);
    // one line for scripts (bench/postfix-compare.sh)
    process.stdout.write(
      `RESULT accepted_per_s=${fmt(acceptedRate, 0)} delivered_per_s=${fmt(deliveredRate, 0)} ` +
        `p50_ms=${fmt(client ? p50 : h50)} p99_ms=${fmt(client ? p99 : h99)}\n`,
    );
    if (opts.keep) process.stdout.write(`Maildir kept in ${maildirRoot}\n`);
  } finally {
    await Promise.all(children.map(stopService));
    await Promise.all(scanners.map((sc) => sc.stop()));
    await dns?.close();
    if (opts.profile) process.stdout.write(`CPU profiles in ${opts.profile}\n`);
    await cleanupRedis(prefix);
    redis.disconnect();
    await vhost.delete();
    if (!opts.keep) rmSync(tmp, { recursive: true, force: true });
  }
}

async function cleanupRedis(prefix: string): Promise<void> {
  const plain = new Redis(REDIS_URL);
  let cursor = '0';
  do {
    const [next, keys] = await plain.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    if (keys.length) await plain.del(...keys);
    cursor = next;
  } while (cursor !== '0');
  plain.disconnect();
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).message}\n`);
  process.exit(1);
});
