import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { processAlive } from './process.js';
import { waitFor } from './wait.js';

/**
 * A private Postfix (Debian's postfix) with smtpd on a loopback port, for differential
 * tests: the instance of bench/postfix-instance.sh (main.cf and master.cf, queue and
 * data all in one directory, `postfix -c`, no chroot, no DNS, logging to a file), which
 * is sourced here so that the tests and the benchmarks run Postfix the same way.
 */
export interface PostfixServer {
  port: number;
  /** The master process (it runs the smtpd, cleanup and queue manager processes). */
  pid: number;
  /** Its log (maillog_file), for a look at what went wrong. */
  log: string;
  stop(): Promise<void>;
}

export interface PostfixOptions {
  /** An empty directory of its own: config, queue and log; removed on stop unless `keep`. */
  dir: string;
  /** main.cf settings laid over the instance's common ones (`postconf -e`). */
  mainCf: Record<string, string>;
  keep?: boolean;
}

const INSTANCE = new URL('../../../bench/postfix-instance.sh', import.meta.url).pathname;

export function postfixInstalled(): boolean {
  return spawnSync('sh', ['-c', 'command -v postfix && command -v postconf']).status === 0;
}

/** Runs a function of postfix-instance.sh with DIR set; throws with its output when it fails. */
function instance(dir: string, script: string): void {
  const r = spawnSync(
    'bash',
    ['-c', `set -euo pipefail; die() { echo "$*" >&2; exit 1; }; . "$1"; ${script}`, 'postfix', INSTANCE],
    { env: { ...process.env, DIR: dir }, input: '', encoding: 'utf8', timeout: 60_000 },
  );
  if (r.status !== 0) throw new Error(`postfix instance (${script}): ${r.stdout}${r.stderr}`);
}

/**
 * Starts the instance (root only: Postfix's master starts as root) and waits until smtpd
 * listens. Its master detaches, so it outlives a test process that dies: stop() stops it
 * (and kills the master by pid if it does not go), and so does this process's exit.
 */
export async function startPostfix(opts: PostfixOptions): Promise<PostfixServer> {
  const port = await freePort();
  instance(opts.dir, `postfix_configure ${port}`);
  const settings = Object.entries(opts.mainCf).map(([k, v]) => `${k} = ${v}`);
  const set = spawnSync('postconf', ['-c', join(opts.dir, 'etc'), '-e', ...settings], { encoding: 'utf8' });
  if (set.status !== 0) throw new Error(`postconf: ${set.stderr}`);
  instance(opts.dir, `postfix_start ${port}`);
  const pidFile = join(opts.dir, 'spool', 'pid', 'master.pid');
  const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : 0;
  if (!pid) {
    instance(opts.dir, 'KEEP_DIR=1 postfix_remove');
    throw new Error(`postfix did not start: no ${pidFile}`);
  }
  const kill = () => {
    if (processAlive(pid)) process.kill(pid, 'SIGKILL');
  };
  process.once('exit', kill);
  return {
    port,
    pid,
    log: join(opts.dir, 'maillog'),
    async stop() {
      process.removeListener('exit', kill);
      try {
        instance(opts.dir, 'KEEP_DIR=1 postfix_remove');
      } catch {
        // killed below
      }
      await waitFor(() => !processAlive(pid), { timeoutMs: 10_000, what: 'postfix to stop' }).catch(
        () => undefined,
      );
      // the master's children (smtpd, qmgr...) leave when it does
      kill();
      if (!opts.keep) rmSync(opts.dir, { recursive: true, force: true, maxRetries: 5 });
    },
  };
}
