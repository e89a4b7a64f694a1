import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { selfSignedCertificate } from '@mailyard/config';
import { freePort } from './ports.js';

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

async function waitPort(port: number, child: ChildProcess, log: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), r(true)));
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (child.exitCode !== null) throw new Error(`dovecot exited with ${child.exitCode}; see ${log}`);
    if (Date.now() > deadline) throw new Error(`dovecot does not listen on ${port}; see ${log}`);
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
  const passwd = join(base, 'passwd');
  const line = (u: string, pw: string) => `${u}:{PLAIN}${pw}::::::\n`;
  writeFileSync(passwd, (opts.users ?? []).map((u) => line(u.user, u.password)).join(''));
  for (const d of opts.mailRoots) {
    mkdirSync(d, { recursive: true });
    spawnSync('chown', ['-R', 'dovecot:dovecot', d]);
  }
  const log = join(base, 'log');
  writeFileSync(
    join(base, 'dovecot.conf'),
    `
protocols = imap${pop3Port ? ' pop3' : ''}
listen = 127.0.0.1
base_dir = ${base}/run
state_dir = ${base}/state
log_path = ${log}
ssl = yes
ssl_cert = <${base}/cert.pem
ssl_key = <${base}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = ${opts.mailLocation}
passdb {
  driver = passwd-file
  args = scheme=PLAIN ${passwd}
}
userdb {
  driver = static
  args = uid=dovecot gid=dovecot home=${base}/home/%u
}
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
  const child = spawn('dovecot', ['-F', '-c', join(base, 'dovecot.conf')], { stdio: 'inherit' });
  // not left running by a test that fails or ends without stop()
  const kill = () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  };
  process.once('exit', kill);
  try {
    await waitPort(port, child, log);
    if (pop3Port) await waitPort(pop3Port, child, log);
  } catch (err) {
    kill();
    throw err;
  }
  return {
    port,
    pop3Port,
    pid: child.pid!,
    async stop() {
      process.removeListener('exit', kill);
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      if (!opts.keep) rmSync(base, { recursive: true, force: true, maxRetries: 5 });
    },
  };
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
