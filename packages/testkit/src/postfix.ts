import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { selfSignedCertificate } from '@mailyard/config';
import { freePort, listening } from './ports.js';
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
  /** The second smtpd, with TLS from the first byte (smtpd_tls_wrappermode), when asked for. */
  tlsPort?: number;
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
  /**
   * A second smtpd on its own port with TLS from the first byte (RFC 8314 §3.3, the
   * smtps/465 service of Debian's master.cf), for submission.
   */
  implicitTls?: boolean;
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
  const postconf = (...args: string[]) => {
    const r = spawnSync('postconf', ['-c', join(opts.dir, 'etc'), ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`postconf: ${r.stderr}`);
  };
  postconf('-e', ...settings);
  const tlsPort = opts.implicitTls ? await freePort() : undefined;
  if (tlsPort) {
    const at = `127.0.0.1:${tlsPort}`;
    postconf('-Me', `${at}/inet = ${at} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes`);
  }
  instance(opts.dir, `postfix_start ${port}`);
  if (tlsPort)
    await waitFor(() => listening(tlsPort), { timeoutMs: 10_000, what: 'postfix on its TLS port' });
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
    tlsPort,
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

export interface IntakeLikeOptions {
  /** A directory of the test's own, made reachable by the postfix user here. */
  dir: string;
  /** Postfix's own name (no bench script or system Postfix uses it). */
  hostname: string;
  /** The one accepted domain, and its users (addresses). */
  domain: string;
  users: string[];
  /** Our intake's limits (smtp-intake's config), given to Postfix. */
  limits: { messageSize: number; recipients: number; hardErrors: number; junk: number };
}

/**
 * The main.cf settings under which Postfix's smtpd answers as our SMTP intake (mta-inbound,
 * msa) is set up, for a differential test: one virtual domain and its users (files written
 * in `dir`), every accepted message thrown away, our limits, a self-signed certificate,
 * HELO/EHLO required before mail, no error sleep (we have no soft limit that slows a
 * client down: Postfix's would only slow the test), and Postfix 3.9's defaults that we
 * follow (RFC 2920 §3.1, RFC 5321 §2.3.8).
 */
export function intakeLikeMainCf(o: IntakeLikeOptions): Record<string, string> {
  chmodSync(o.dir, 0o755); // Postfix's processes run as the postfix user
  const { key, cert } = selfSignedCertificate(o.hostname);
  writeFileSync(join(o.dir, 'key.pem'), key, { mode: 0o600 });
  writeFileSync(join(o.dir, 'cert.pem'), cert);
  writeFileSync(join(o.dir, 'vmailbox'), o.users.map((u) => `${u} ${o.domain}/${u}/\n`).join(''));
  return {
    myhostname: o.hostname,
    // `RCPT TO:<postmaster>` is postmaster of our domain, as the intake takes it
    myorigin: o.domain,
    virtual_mailbox_domains: o.domain,
    virtual_mailbox_maps: `texthash:${join(o.dir, 'vmailbox')}`,
    virtual_transport: 'discard',
    default_transport: 'discard',
    relay_transport: 'discard',
    smtpd_helo_required: 'yes',
    message_size_limit: String(o.limits.messageSize),
    smtpd_recipient_limit: String(o.limits.recipients),
    smtpd_hard_error_limit: String(o.limits.hardErrors),
    smtpd_junk_command_limit: String(o.limits.junk),
    smtpd_error_sleep_time: '0',
    smtpd_forbid_unauth_pipelining: 'yes',
    smtpd_forbid_bare_newline: 'yes',
    smtpd_tls_cert_file: join(o.dir, 'cert.pem'),
    smtpd_tls_key_file: join(o.dir, 'key.pem'),
  };
}
