import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { tempDir } from './files.js';
import { waitFor } from './wait.js';
import { freePort } from './ports.js';

// Real clamd and rspamd processes for the content tests (policy, msa), each on loopback ports of
// its own with a configuration written here. A missing binary fails the test with the
// package to install: these tests are never skipped.

/** The EICAR anti-virus test string (not a virus; every scanner detects it by convention). */
export const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
/** The GTUBE spam test string (rspamd: reject action when test patterns are enabled). */
export const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

export interface Scanner {
  url: string;
  controllerUrl?: string;
  /** rspamd's milter (its proxy worker), `inet:127.0.0.1:PORT` for Postfix's smtpd_milters. */
  milter?: string;
  stop(): Promise<void>;
  log(): string;
}

function requireBinary(bin: string, pkg: string): string {
  const r = spawnSync('sh', ['-c', `command -v ${bin} || ls /usr/sbin/${bin} /usr/bin/${bin} 2>/dev/null`], {
    encoding: 'utf8',
  });
  const path = r.stdout.trim().split('\n')[0];
  if (!path)
    throw new Error(`${bin} not found: install the Debian package ${pkg} (apt-get install -y ${pkg})`);
  return path;
}

function stopper(child: ChildProcess, cleanup: () => void): () => Promise<void> {
  return async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    cleanup();
  };
}

function tcpAsk(port: number, data: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1' });
    let out = '';
    s.on('data', (d) => (out += d.toString()));
    s.on('end', () => resolve(out));
    s.on('error', reject);
    s.on('connect', () => s.write(data));
  });
}

/** clamd with a one-signature database (EICAR, as a body and as a hash signature). */
export async function startClamd(): Promise<Scanner> {
  const bin = requireBinary('clamd', 'clamav-daemon');
  const dir = tempDir('mailyard-clamd-');
  const db = join(dir.path, 'db');
  mkdirSync(db);
  const hex = Buffer.from(EICAR).toString('hex');
  writeFileSync(join(db, 'test.ndb'), `Mailyard.Test.EICAR:0:*:${hex}\n`);
  const { createHash } = await import('node:crypto');
  const md5 = createHash('md5').update(EICAR).digest('hex');
  writeFileSync(join(db, 'test.hdb'), `${md5}:${EICAR.length}:Mailyard.Test.EICAR.Hash\n`);
  const port = await freePort();
  const conf = join(dir.path, 'clamd.conf');
  writeFileSync(
    conf,
    [
      'Foreground yes',
      `TCPSocket ${port}`,
      'TCPAddr 127.0.0.1',
      `DatabaseDirectory ${db}`,
      `LogFile ${join(dir.path, 'clamd.log')}`,
      `PidFile ${join(dir.path, 'clamd.pid')}`,
      `TemporaryDirectory ${dir.path}`,
      ...(process.getuid?.() === 0 ? ['User root'] : []),
      'ScanMail yes',
      '',
    ].join('\n'),
  );
  let output = '';
  const child = spawn(bin, ['--config-file', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const log = () => {
    let file = '';
    try {
      file = readFileSync(join(dir.path, 'clamd.log'), 'utf8');
    } catch {
      // not written yet
    }
    return output + file;
  };
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`clamd exited with ${child.exitCode}: ${log()}`);
        return (await tcpAsk(port, 'zPING\0')).startsWith('PONG');
      },
      { timeoutMs: 180_000, intervalMs: 200, what: 'clamd to answer PING' },
    );
  } catch (err) {
    child.kill('SIGKILL');
    dir.cleanup();
    throw new Error(`clamd did not start: ${(err as Error).message}\n${log()}`);
  }
  return { url: `tcp://127.0.0.1:${port}`, stop: stopper(child, () => dir.cleanup()), log };
}

/**
 * rspamd on loopback ports with GTUBE test patterns on, no Redis, DNS through the test server.
 * `localD`: more files for its local.d (name → content), e.g. a multimap rule for one test.
 * `milter`: also its proxy worker as a milter scanning by itself (for Postfix in the benches).
 */
export async function startRspamd(
  dnsServer: string,
  localD: Record<string, string> = {},
  opts: { milter?: boolean } = {},
): Promise<Scanner> {
  const bin = requireBinary('rspamd', 'rspamd');
  const dir = tempDir('mailyard-rspamd-');
  const local = join(dir.path, 'local.d');
  const override = join(dir.path, 'override.d');
  for (const d of [local, override, join(dir.path, 'db'), join(dir.path, 'run')]) mkdirSync(d);
  const [normal, controller] = [await freePort(), await freePort()];
  writeFileSync(join(override, 'worker-normal.inc'), `bind_socket = "127.0.0.1:${normal}";\ncount = 1;\n`);
  writeFileSync(
    join(override, 'worker-controller.inc'),
    `bind_socket = "127.0.0.1:${controller}";\ncount = 1;\nsecure_ip = "127.0.0.1";\n`,
  );
  const milter = opts.milter ? await freePort() : 0;
  writeFileSync(
    join(override, 'worker-proxy.inc'),
    milter
      ? `bind_socket = "127.0.0.1:${milter}";\ncount = 1;\nmilter = yes;\ntimeout = 120s;\n` +
          'upstream "local" {\n  default = yes;\n  self_scan = yes;\n}\n'
      : 'enabled = false;\n',
  );
  writeFileSync(join(override, 'worker-fuzzy.inc'), 'enabled = false;\n');
  writeFileSync(
    join(local, 'options.inc'),
    `enable_test_patterns = true;\ndns { nameserver = ["${dnsServer}"]; timeout = 1s; retransmits = 1; }\n`,
  );
  writeFileSync(join(override, 'logging.inc'), `type = "console";\nlevel = "error";\n`);
  for (const [name, content] of Object.entries(localD)) writeFileSync(join(local, name), content);
  // the Bayes classifier keeps its data in sqlite here (no Redis in the tests)
  writeFileSync(
    join(override, 'classifier-bayes.conf'),
    `backend = "sqlite3";\nmin_learns = 1;\nstatfile { symbol = "BAYES_HAM"; spam = false; path = "${dir.path}/db/bayes.ham.sqlite"; }\n` +
      `statfile { symbol = "BAYES_SPAM"; spam = true; path = "${dir.path}/db/bayes.spam.sqlite"; }\n`,
  );
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number(spawnSync('id', ['-u', '_rspamd'], { encoding: 'utf8' }).stdout.trim());
    const gid = Number(spawnSync('id', ['-g', '_rspamd'], { encoding: 'utf8' }).stdout.trim());
    for (const d of [dir.path, join(dir.path, 'db'), join(dir.path, 'run')]) {
      chmodSync(d, 0o755);
      if (uid) chownSync(d, uid, gid);
    }
  }
  let output = '';
  const child = spawn(
    bin,
    [
      '-f',
      '-c',
      '/etc/rspamd/rspamd.conf',
      '--var',
      `LOCAL_CONFDIR=${dir.path}`,
      '--var',
      `DBDIR=${dir.path}/db`,
      '--var',
      `RUNDIR=${dir.path}/run`,
      ...(asRoot ? ['-u', '_rspamd', '-g', '_rspamd'] : []),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const url = `http://127.0.0.1:${normal}`;
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`rspamd exited with ${child.exitCode}`);
        const r = await fetch(`${url}/ping`);
        return r.ok;
      },
      { timeoutMs: 180_000, intervalMs: 250, what: 'rspamd /ping' },
    );
  } catch (err) {
    child.kill('SIGKILL');
    dir.cleanup();
    throw new Error(`rspamd did not start: ${(err as Error).message}\n${output.slice(-4000)}`);
  }
  return {
    url,
    controllerUrl: `http://127.0.0.1:${controller}`,
    ...(milter ? { milter: `inet:127.0.0.1:${milter}` } : {}),
    stop: stopper(child, () => dir.cleanup()),
    log: () => output,
  };
}
