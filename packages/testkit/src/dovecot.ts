import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { selfSignedCertificate } from '@mailyard/config';
import { freePort, listening } from './ports.js';

/** A Dovecot (Debian's dovecot-imapd) on a loopback port, for benchmarks and differential tests. */
export interface DovecotServer {
  port: number;
  /** The POP3 listener (dovecot-pop3d), when asked for with `pop3`. */
  pop3Port?: number;
  /** The master process (its children are the login and imap processes). */
  pid: number;
  stop(): Promise<void>;
}

export interface DovecotOptions {
  /**
   * Directory for the config, sockets, logs and state (removed on stop unless `keep`); it
   * and the mail roots must be reachable by the dovecot user.
   */
  dir: string;
  /**
   * `mail_location`, e.g. `maildir:${dovecotPath(root)}/%u` (a `%` of a path doubled).
   */
  mailLocation: string;
  /** Directories of the mail location, handed to the dovecot user that the mail processes run as. */
  mailRoots: string[];
  /** The logins (all given here: Dovecot notices a changed passwd file only a second later). */
  users?: { user: string; password: string }[];
  /** Login processes kept ready (a benchmark of login rates wants some). */
  loginProcesses?: number;
  /** Extra lines appended to dovecot.conf. */
  extraConfig?: string;
  /** A POP3 listener too (needs dovecot-pop3d, see dovecotInstalled). */
  pop3?: boolean;
  keep?: boolean;
}

/** A path as dovecot.conf's variable expansion needs it. */
export function dovecotPath(path: string): string {
  return path.replace(/%/g, '%%');
}

/** Dovecot with its IMAP server, and its POP3 server too for `'pop3'`. */
export function dovecotInstalled(protocol: 'imap' | 'pop3' = 'imap'): boolean {
  return spawnSync('sh', ['-c', `command -v dovecot && test -x /usr/lib/dovecot/${protocol}`]).status === 0;
}

/**
 * Writes the passwd file of `users` in `base` and returns the passdb and userdb sections
 * that read it.
 */
function userDatabases(base: string, users: { user: string; password: string }[]): string {
  const passwd = join(base, 'passwd');
  writeFileSync(passwd, users.map((u) => `${u.user}:{PLAIN}${u.password}::::::\n`).join(''));
  return `
passdb {
  driver = passwd-file
  args = scheme=PLAIN ${passwd}
}
userdb {
  driver = static
  args = uid=dovecot gid=dovecot home=${base}/home/%u
}`;
}

/** Waits until `where` (a loopback port, or a socket's path) takes connections. */
async function waitListening(where: number | string, child: ChildProcess, log: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (await listening(where)) return;
    if (child.exitCode !== null) throw new Error(`dovecot exited with ${child.exitCode}; see ${log}`);
    if (Date.now() > deadline) throw new Error(`dovecot does not listen on ${where}; see ${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Starts `dovecot -F` with a config of its own: IMAP (and POP3 with `pop3`) on free
 * loopback ports, STARTTLS/STLS, PLAIN logins.
 */
export async function startDovecot(opts: DovecotOptions): Promise<DovecotServer> {
  const port = await freePort();
  const pop3Port = opts.pop3 ? await freePort() : undefined;
  const base = opts.dir;
  mkdirSync(join(base, 'run'), { recursive: true });
  const { key, cert } = selfSignedCertificate('imap.dovecot.test');
  writeFileSync(join(base, 'key.pem'), key);
  chmodSync(join(base, 'key.pem'), 0o600);
  writeFileSync(join(base, 'cert.pem'), cert);
  for (const d of opts.mailRoots) {
    mkdirSync(d, { recursive: true });
    spawnSync('chown', ['-R', 'dovecot:dovecot', d]);
  }
  writeFileSync(
    join(base, 'dovecot.conf'),
    `
protocols = imap${pop3Port ? ' pop3' : ''}
listen = 127.0.0.1
base_dir = ${base}/run
state_dir = ${base}/state
log_path = ${base}/log
ssl = yes
ssl_cert = <${base}/cert.pem
ssl_key = <${base}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = ${opts.mailLocation}
${userDatabases(base, opts.users ?? [])}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ${port}
  }
  inet_listener imaps {
    port = 0
  }
  process_min_avail = ${opts.loginProcesses ?? 1}
}
${pop3Port ? pop3Listener(pop3Port) : ''}
${opts.extraConfig ?? ''}
`,
  );
  const { pid, stop } = await runDovecot(base, [port, ...(pop3Port ? [pop3Port] : [])], opts.keep);
  return { port, pop3Port, pid, stop };
}

/**
 * Runs `dovecot -F` with `base`'s dovecot.conf until stop(), once every one of `listeners`
 * (loopback ports, socket paths) takes connections; stop() removes `base` unless `keep`.
 */
async function runDovecot(
  base: string,
  listeners: (number | string)[],
  keep?: boolean,
): Promise<{ pid: number; stop: () => Promise<void> }> {
  const log = join(base, 'log');
  const child = spawn('dovecot', ['-F', '-c', join(base, 'dovecot.conf')], { stdio: 'inherit' });
  // not left running by a test that fails or ends without stop()
  const kill = () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  };
  process.once('exit', kill);
  try {
    for (const l of listeners) await waitListening(l, child, log);
  } catch (err) {
    kill();
    throw err;
  }
  return {
    pid: child.pid!,
    async stop() {
      process.removeListener('exit', kill);
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      if (!keep) rmSync(base, { recursive: true, force: true, maxRetries: 5 });
    },
  };
}

/** Dovecot's authentication service alone (no mail protocol), for Postfix's SASL. */
export interface DovecotAuth {
  /** The auth client socket (Postfix: `smtpd_sasl_type = dovecot`, `smtpd_sasl_path`). */
  socket: string;
  pid: number;
  stop(): Promise<void>;
}

/**
 * Starts `dovecot -F` with no protocol but its auth service, PLAIN and LOGIN over the
 * passwd file of `users`, its client socket open to every local user (Postfix's smtpd
 * runs as postfix). Without the failure delay and the penalty (anvil's auth-penalty
 * socket closed to the auth process, which then goes without): a client address that
 * failed would wait up to 15 s a login, longer than a test waits for a reply.
 */
export async function startDovecotAuth(opts: {
  dir: string;
  users: { user: string; password: string }[];
  keep?: boolean;
}): Promise<DovecotAuth> {
  const base = opts.dir;
  mkdirSync(join(base, 'run'), { recursive: true });
  chmodSync(base, 0o755);
  const socket = join(base, 'auth-client');
  writeFileSync(
    join(base, 'dovecot.conf'),
    `
protocols =
listen = 127.0.0.1
base_dir = ${base}/run
state_dir = ${base}/state
log_path = ${base}/log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
${userDatabases(base, opts.users)}
service auth {
  unix_listener ${socket} {
    mode = 0666
  }
  process_min_avail = 1
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
`,
  );
  const { pid, stop } = await runDovecot(base, [socket], opts.keep);
  return { socket, pid, stop };
}

const pop3Listener = (port: number) => `
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = ${port}
  }
  inet_listener pop3s {
    port = 0
  }
}
`;
