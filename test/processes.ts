import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { waitFor } from '@mailyard/testkit';

const root = new URL('..', import.meta.url).pathname;

/** A free TCP port on 127.0.0.1 (bound and released). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export interface ServiceProcess {
  child: ChildProcess;
  httpPort: number;
  output(): string;
  /** SIGKILL, as a crash would. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

/** Runs a service's main.ts as its own process (the production shape) and waits for /readyz. */
export async function startServiceProcess(
  service: string,
  env: Record<string, string>,
): Promise<ServiceProcess> {
  const httpPort = await freePort();
  let out = '';
  const child = spawn(process.execPath, ['--import', 'tsx', `services/${service}/src/main.ts`], {
    cwd: root,
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
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`${service} exited: ${out}`);
      const res = await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => null);
      return res?.status === 200;
    },
    { timeoutMs: 30_000, what: `${service} ready` },
  );
  return {
    child,
    httpPort,
    output: () => out,
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
