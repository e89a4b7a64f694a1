#!/usr/bin/env node
// Runs every test file (unit, service and system tiers) with node's test runner.
// Each file runs in its own process, isolated by RabbitMQ vhost and Redis key prefix.
// Usage: pnpm test [path-filter...]   (an argument naming a file runs that file as is)
//
// No single hang may hold CI: every file has a deadline (TEST_FILE_TIMEOUT, default 10m),
// after which its process group, with whatever it started, is killed and the file counts
// as failed; each test sets its own `timeout` besides. TEST_TIMEOUT (node's
// --test-timeout) sets a default for tests without one, off unless given: node applies
// it to the file as a whole too, so a long file of short tests would be cut by it. TEST_CONCURRENCY files run at once
// (default 3); the output of each is printed whole when it ends, then a summary naming
// every file that failed, with its failures again (the end of a long CI log shows them).
// The exit status is 1 when any did.
//
// The longest files start first: one started last would run on alone at the end while the
// other slots stand idle. How long each took is recorded in scripts/test-durations.json
// (TEST_DURATIONS names another file); `TEST_RECORD_DURATIONS=1 pnpm test` rewrites it from
// the run. A file it does not name yet counts as short; the order is the same on every run.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;

/** `90s`, `10m`, `1h`, or a bare number of minutes → milliseconds. */
function duration(name, fallback) {
  const text = process.env[name] || fallback;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) {
    console.error(`${name}: expected minutes or a duration like 90s or 10m, got "${text}"`);
    process.exit(2);
  }
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 'm'];
}
const fileTimeout = duration('TEST_FILE_TIMEOUT', '10m');
const testTimeout = process.env.TEST_TIMEOUT ? duration('TEST_TIMEOUT', '5m') : null;
const concurrency = Math.max(1, Number(process.env.TEST_CONCURRENCY ?? 3) || 1);

const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.') || name === 'dist') continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.ts')) files.push(relative(root, p));
  }
};
for (const d of ['packages', 'services', 'test']) walk(join(root, d));
const args = process.argv.slice(2);
const explicit = args.filter(
  (a) => a.endsWith('.ts') && existsSync(join(root, a)) && statSync(join(root, a)).isFile(),
);
const filters = args.filter((a) => !explicit.includes(a));
const selected = args.length
  ? [...new Set([...explicit, ...files.filter((f) => filters.some((x) => f.includes(x)))])]
  : files;
if (!selected.length) {
  console.error(`no test files match ${args.join(' ')}`);
  process.exit(1);
}

const fmtMs = (ms) => (ms >= 60_000 ? `${(ms / 60_000).toFixed(1)} min` : `${(ms / 1000).toFixed(1)} s`);
// With one file at a time its output streams as it comes; otherwise it would interleave.
const stream = concurrency === 1 || selected.length === 1;
const running = new Set();
const results = [];

function runFile(file) {
  const started = Date.now();
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--test',
      ...(testTimeout ? [`--test-timeout=${testTimeout}`] : []),
      '--test-reporter=spec',
      file,
    ],
    // its own process group, so the watchdog can kill what the file started too
    { cwd: root, detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  running.add(child);
  const chunks = [];
  // kept when streamed too: the summary repeats a failed file's failures
  const out = (c) => {
    chunks.push(c);
    if (stream) process.stdout.write(c);
  };
  child.stdout.on('data', out);
  child.stderr.on('data', out);
  let timedOut = false;
  const watchdog = setTimeout(() => {
    timedOut = true;
    killGroup(child, 'SIGTERM');
    setTimeout(() => killGroup(child, 'SIGKILL'), 5000).unref();
  }, fileTimeout);
  if (stream) console.log(`▶ ${file}`);
  return new Promise((resolve) => {
    // whatever the file left behind (a server it started) goes with it, and with it
    // any copy of our pipes that would keep 'close' from coming
    child.on('exit', () => killGroup(child, 'SIGKILL'));
    child.on('close', (code, signal) => {
      clearTimeout(watchdog);
      running.delete(child);
      const ms = Date.now() - started;
      const why = timedOut
        ? `timed out after ${fmtMs(fileTimeout)} (TEST_FILE_TIMEOUT), killed`
        : code === 0
          ? null
          : `exit ${code ?? signal}`;
      if (!stream) process.stdout.write(Buffer.concat(chunks));
      console.log(`${why ? '✖' : '✔'} ${file} (${fmtMs(ms)})${why ? `: ${why}` : ''}\n`);
      results.push({ file, why, ms, failures: why ? failures(Buffer.concat(chunks).toString()) : '' });
      resolve();
    });
  });
}

/**
 * What a failed file's output says of its failures, for the summary: the spec reporter's
 * closing "failing tests" section, else the output's last lines (a crash, a watchdog kill),
 * at most SUMMARY_LINES lines, so that the end of a long log still shows why.
 */
const SUMMARY_LINES = 150;
function failures(text) {
  const at = text.lastIndexOf('✖ failing tests:');
  const lines = (at >= 0 ? text.slice(at) : text).trimEnd().split('\n');
  const kept = at >= 0 ? lines.slice(0, SUMMARY_LINES) : lines.slice(-60);
  return kept.join('\n') + (at >= 0 && lines.length > SUMMARY_LINES ? '\n…' : '');
}

function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal);
  } catch {
    // the group is gone already
  }
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    for (const c of running) killGroup(c, 'SIGKILL');
    process.exit(130);
  });
}

const durationsFile = process.env.TEST_DURATIONS || join(root, 'scripts', 'test-durations.json');
/** File → seconds it took in a recorded run. */
const recorded = existsSync(durationsFile) ? JSON.parse(readFileSync(durationsFile, 'utf8')) : {};
// sort is stable: files of the same (or no) record keep the order they were found in
const queue = [...selected].sort((a, b) => (recorded[b] ?? 0) - (recorded[a] ?? 0));
await Promise.all(
  Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
    while (queue.length) await runFile(queue.shift());
  }),
);

if (process.env.TEST_RECORD_DURATIONS) {
  const next = { ...recorded };
  for (const r of results) next[r.file] = Math.round(r.ms / 1000);
  const kept = Object.keys(next)
    .filter((f) => existsSync(join(root, f)))
    .sort();
  writeFileSync(
    durationsFile,
    `${JSON.stringify(Object.fromEntries(kept.map((f) => [f, next[f]])), null, 2)}\n`,
  );
  console.log(`durations of ${results.length} files recorded in ${relative(root, durationsFile)}`);
}

const failed = results.filter((r) => r.why);
console.log(`${results.length - failed.length} of ${results.length} test files passed`);
if (failed.length) {
  console.log(`${failed.length} failed:`);
  for (const r of failed) console.log(`  ✖ ${r.file}: ${r.why}`);
  for (const r of failed) console.log(`\n── ${r.file} ──\n${r.failures}`);
  process.exit(1);
}
