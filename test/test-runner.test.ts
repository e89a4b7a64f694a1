import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { processAlive as alive, tempDir, waitFor } from '@mailyard/testkit';

// `pnpm test` (scripts/test.mjs) as CI runs it: a file that hangs must fail within its
// deadline, take what it started with it, and be named; the run must exit non-zero.

const root = new URL('..', import.meta.url).pathname;

function runTests(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  // without the variable that tells node's runner it is inside a test file already
  const { NODE_TEST_CONTEXT: _, ...outer } = process.env;
  const child = spawn(process.execPath, ['scripts/test.mjs', ...args], {
    cwd: root,
    env: { ...outer, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, out })));
}

test(
  'a hanging file is killed at TEST_FILE_TIMEOUT and named; the run exits 1',
  { timeout: 180_000 },
  async (t) => {
    const tmp = tempDir();
    t.after(() => tmp.cleanup());
    const pidFile = join(tmp.path, 'pid');
    const started = Date.now();
    const r = await runTests(
      ['test/fixtures/runner/hang.ts', 'test/fixtures/runner/fail.ts', 'test/fixtures/runner/pass.ts'],
      // long enough for the other two files to end on a loaded machine
      { TEST_FILE_TIMEOUT: '40s', TEST_CONCURRENCY: '3', FIXTURE_PID_FILE: pidFile },
    );
    assert.equal(r.code, 1, r.out);
    assert.match(
      r.out,
      /✖ test\/fixtures\/runner\/hang\.ts: timed out after 40\.0 s \(TEST_FILE_TIMEOUT\), killed/,
    );
    assert.match(r.out, /✖ test\/fixtures\/runner\/fail\.ts: exit 1/);
    assert.match(r.out, /✔ test\/fixtures\/runner\/pass\.ts/);
    assert.match(r.out, /1 of 3 test files passed/);
    // the summary at the end says again why each failed: the end of a long log shows it
    const summary = r.out.slice(r.out.indexOf('1 of 3 test files passed'));
    assert.match(summary, /── test\/fixtures\/runner\/fail\.ts ──\n✖ failing tests:[^]*✖ fails[^]*1 !== 2/);
    assert.match(summary, /── test\/fixtures\/runner\/hang\.ts ──\n/);
    assert.doesNotMatch(summary, /── test\/fixtures\/runner\/pass\.ts ──/);
    assert.ok(Date.now() - started < 120_000, 'the hang held the run');
    // the process the hanging file started went with it
    const pid = Number(readFileSync(pidFile, 'utf8'));
    await waitFor(() => !alive(pid), { what: `process ${pid} of the killed file to end`, timeoutMs: 10_000 });
  },
);

test('a run where every file passes exits 0', { timeout: 120_000 }, async () => {
  const r = await runTests(['test/fixtures/runner/pass.ts'], {});
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /1 of 1 test files passed/);
});

test('a bad TEST_FILE_TIMEOUT is refused naming the variable', { timeout: 60_000 }, async () => {
  const r = await runTests(['test/fixtures/runner/pass.ts'], { TEST_FILE_TIMEOUT: 'soon' });
  assert.equal(r.code, 2);
  assert.match(r.out, /^TEST_FILE_TIMEOUT: expected minutes or a duration like 90s or 10m, got "soon"/);
});

test(
  'the files that took longest in the recorded run start first, and a run records its own',
  { timeout: 120_000 },
  async (t) => {
    const tmp = tempDir();
    t.after(() => tmp.cleanup());
    const durations = join(tmp.path, 'durations.json');
    const [fail, pass] = ['test/fixtures/runner/fail.ts', 'test/fixtures/runner/pass.ts'];
    writeFileSync(durations, JSON.stringify({ [fail]: 1, [pass]: 600 }));
    // one at a time, so the order they start in is the order they are shown in
    const r = await runTests([fail, pass], {
      TEST_CONCURRENCY: '1',
      TEST_DURATIONS: durations,
      TEST_RECORD_DURATIONS: '1',
    });
    assert.equal(r.code, 1, r.out);
    const started = [...r.out.matchAll(/^▶ (\S+)$/gm)].map((m) => m[1]);
    assert.deepEqual(started, [pass, fail], r.out);
    const after = JSON.parse(readFileSync(durations, 'utf8')) as Record<string, number>;
    assert.deepEqual(Object.keys(after), [fail, pass]);
    assert.ok(after[pass]! < 600, `the run's own time: ${after[pass]} s`);
  },
);
