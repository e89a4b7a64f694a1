import { spawn, type ChildProcess } from 'node:child_process';
import { Directory } from '@mailyard/directory';
import {
  createTestRedis,
  createVhost,
  entryArgs,
  freePort,
  tempDir,
  waitFor,
  type TestRedis,
  type TestVhost,
} from '@mailyard/testkit';

const root = new URL('..', import.meta.url).pathname;

export { freePort };

export interface ServiceProcess {
  child: ChildProcess;
  httpPort: number;
  output(): string;
  /** GET /readyz: its status code and body. */
  readyz(): Promise<{ status: number; body: { status: string; failing?: string[] } }>;
  /** SIGKILL, as a crash would. */
  kill(): Promise<void>;
  stop(): Promise<void>;
  /** SIGTERM, as docker stop sends it: how the process ended, and how long after the signal. */
  terminate(): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
}

/** How to run a service other than its main.ts under tsx (the image's command, say). */
export interface ServiceCommand {
  file: string;
  args: string[];
  cwd: string;
}

/**
 * Runs a service's main.ts as its own process (the production shape) and waits for
 * /readyz to say ready (or, with `ready: false`, only for /readyz to answer).
 */
export async function startServiceProcess(
  service: string,
  env: Record<string, string>,
  opts: { ready?: boolean; command?: ServiceCommand } = {},
): Promise<ServiceProcess> {
  const httpPort = await freePort();
  let out = '';
  const command = opts.command ?? {
    file: process.execPath,
    args: entryArgs(`services/${service}`),
    cwd: root,
  };
  const child = spawn(command.file, command.args, {
    cwd: command.cwd,
    env: {
      ...process.env,
      LOG_LEVEL: 'warn',
      LISTEN_ADDRESS: '127.0.0.1',
      ...env,
      HTTP_PORT: String(httpPort),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.once('exit', (code, signal) => r({ code, signal })),
  );
  const wantReady = opts.ready ?? true;
  try {
    await Promise.race([
      waitFor(
        async () => {
          const res = await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => null);
          return wantReady ? res?.status === 200 : !!res;
        },
        // a service that runs workers (retrieval) starts them all first: on a busy machine
        // that takes a while, and only a hang should fail here
        { timeoutMs: 60_000, what: `${service} ready` },
      ),
      exited.then(({ code, signal }) => Promise.reject(new Error(`${service} exited (${signal ?? code})`))),
    ]);
  } catch (err) {
    const readyz = await fetch(`http://127.0.0.1:${httpPort}/readyz`)
      .then((r) => r.text())
      .catch(() => 'no answer');
    // a process that never became ready is nobody's to stop later: left running, it
    // would hold the test file open until its deadline
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    throw new Error(`${(err as Error).message}; /readyz said ${readyz}; its output: ${out}`, { cause: err });
  }
  return {
    child,
    httpPort,
    output: () => out,
    async readyz() {
      const res = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
      return { status: res.status, body: (await res.json()) as { status: string; failing?: string[] } };
    },
    async terminate() {
      const started = Date.now();
      child.kill('SIGTERM');
      const end = await exited;
      return { ...end, ms: Date.now() - started };
    },
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Services as processes over one vhost, Redis prefix and Maildir, with accounts of one domain. */
export interface ProcessTestbed {
  vhost: TestVhost;
  redis: TestRedis;
  /** The Maildir root every process gets. */
  maildir: string;
  /** What every process gets in its environment. */
  env: Record<string, string>;
  /** Starts a service process (see startServiceProcess), killed by close() if still running. */
  start(
    service: string,
    extra?: Record<string, string>,
    opts?: { ready?: boolean; command?: ServiceCommand },
  ): Promise<ServiceProcess>;
  close(): Promise<void>;
}

export async function startProcessTestbed(
  domain: string,
  accounts: string[],
  env: Record<string, string> = {},
): Promise<ProcessTestbed> {
  const vhost = await createVhost();
  const redis = createTestRedis();
  const dir = tempDir();
  const directory = new Directory(redis.redis);
  await directory.addDomain(domain);
  for (const a of accounts) await directory.addUser(a, 'correct horse battery staple');
  const procs: ServiceProcess[] = [];
  const common = {
    AMQP_URL: vhost.url,
    REDIS_PREFIX: redis.prefix,
    MAILDIR_ROOT: dir.path,
    MYHOSTNAME: `mx.${domain}`,
    SMTPD_PEERNAME_LOOKUP: 'no',
    ...env,
  };
  return {
    vhost,
    redis,
    maildir: dir.path,
    env: common,
    async start(service, extra = {}, opts = {}) {
      const p = await startServiceProcess(service, { ...common, ...extra }, opts);
      procs.push(p);
      return p;
    },
    async close() {
      for (const p of procs) await p.kill().catch(() => undefined);
      await redis.cleanup();
      await vhost.delete();
      dir.cleanup();
    },
  };
}
