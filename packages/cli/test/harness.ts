import { spawnSync } from 'node:child_process';
import { PassThrough, Readable } from 'node:stream';
import type { TestContext } from 'node:test';
import { Directory } from '@mailyard/directory';
import { REDIS_URL, createTestRedis, entryArgs } from '@mailyard/testkit';
import { type CliDeps, type CliInput, createRedisClient, runCli } from '../src/index.js';

const repoRoot = new URL('../../../', import.meta.url).pathname;

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Piped standard input (not a terminal). */
  input?: string | Buffer;
  /** A terminal on standard input instead (see fakeTty). */
  tty?: CliInput;
  /** Environment for the CLI; REDIS_URL and REDIS_PREFIX default to the test's. */
  env?: NodeJS.ProcessEnv;
  connectDeadlineMs?: number;
}

export interface CliHarness {
  prefix: string;
  /** A client over the test's key prefix, for what the CLI reads that it cannot write itself. */
  redis: ReturnType<typeof createTestRedis>['redis'];
  /** The directory over the test's key prefix, to check what the CLI wrote. */
  directory: Directory;
  /** Runs the real program in-process. */
  run(argv: string[], opts?: RunOptions): Promise<Run>;
  /** Runs the command in-process and fails the test unless it exits 0. */
  ok(argv: string[], opts?: RunOptions): Promise<string>;
}

/** The CLI over a key prefix of the test's own, removed when the test ends. */
export function cliHarness(t: TestContext): CliHarness {
  const tr = createTestRedis();
  t.after(() => tr.cleanup());
  const run = async (argv: string[], opts: RunOptions = {}): Promise<Run> => {
    let stdout = '';
    let stderr = '';
    const deps: CliDeps = {
      env: opts.env ?? { REDIS_URL, REDIS_PREFIX: tr.prefix },
      createRedis: createRedisClient,
      stdin: opts.tty ?? Readable.from(opts.input === undefined ? [] : [Buffer.from(opts.input)]),
      stdout: { write: (s: string) => (stdout += s) },
      stderr: { write: (s: string) => (stderr += s) },
      connectDeadlineMs: opts.connectDeadlineMs,
    };
    const code = await runCli(argv, deps);
    return { code, stdout, stderr };
  };
  return {
    prefix: tr.prefix,
    redis: tr.redis,
    directory: new Directory(tr.redis),
    run,
    async ok(argv, opts) {
      const r = await run(argv, opts);
      if (r.code !== 0) throw new Error(`mailyard ${argv.join(' ')} exited ${r.code}: ${r.stderr}`);
      return r.stdout;
    },
  };
}

export interface FakeTty extends PassThrough {
  isTTY: true;
  rawModes: boolean[];
  setRawMode(raw: boolean): this;
}

/** A stand-in for a terminal on stdin: records raw-mode switches; write keystrokes to it. */
export function fakeTty(): FakeTty {
  const s = new PassThrough() as FakeTty;
  s.isTTY = true;
  s.rawModes = [];
  s.setRawMode = (raw: boolean) => {
    s.rawModes.push(raw);
    return s;
  };
  return s;
}

/** Runs `mailyard` as the operator does: a real node process from the repository root. */
export function runProcess(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}) {
  const started = Date.now();
  const r = spawnSync(process.execPath, [...entryArgs('packages/cli'), ...args], {
    cwd: repoRoot,
    env: { ...process.env, MAILYARD_CONFIG: '', ...opts.env },
    input: opts.input ?? '',
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - started };
}

export { repoRoot };

/** A password the directory accepts. */
export const GOOD_PASSWORD = 'correct horse battery staple';
