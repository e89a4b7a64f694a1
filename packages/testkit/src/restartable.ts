import { spawn, type ChildProcess } from 'node:child_process';
import { waitFor } from './wait.js';

/** A server process that a fault test kills and starts again, always the same way. */
export interface Restartable {
  /** Spawns it (if not running) and resolves once `ready` says so. */
  start(): Promise<void>;
  /** SIGKILL, as a crash; resolves once the process is gone. */
  kill(): Promise<void>;
  /** SIGTERM, a clean shutdown; resolves once the process is gone. */
  stop(): Promise<void>;
  /**
   * SIGSTOP: the process keeps its connections open and answers nothing on them (a server
   * hung, or a machine swapping) until resume().
   */
  pause(): void;
  /** SIGCONT after pause(); nothing when it is not paused. */
  resume(): void;
  /** Kills it if running and removes what it left (its data directory). */
  close(): Promise<void>;
}

/** Starts the process; if it never gets ready, it is killed and cleaned up before the error. */
export async function startRestartable(opts: {
  name: string;
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  /** Resolves true when the server answers; throwing or false means not yet. */
  ready: () => Promise<boolean>;
  readyTimeoutMs: number;
  /** Removes what the process leaves behind, once it is gone for good. */
  cleanup: () => void;
}): Promise<Restartable> {
  let child: ChildProcess | null = null;
  let output = '';
  const signal = async (sig: NodeJS.Signals): Promise<void> => {
    const c = child;
    if (!c) return;
    const gone = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill(sig);
    await gone;
  };
  const kill = () => signal('SIGKILL');
  const start = async (): Promise<void> => {
    if (child) return;
    const c = spawn(opts.command, opts.args, {
      env: opts.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (d: Buffer) => (output = (output + d.toString()).slice(-4000));
    c.stdout.on('data', keep);
    c.stderr.on('data', keep);
    c.once('exit', () => {
      if (child === c) child = null;
    });
    child = c;
    try {
      await waitFor(
        async () => {
          if (child !== c) throw new Error(`${opts.name} exited: ${output}`);
          return opts.ready();
        },
        { timeoutMs: opts.readyTimeoutMs, intervalMs: 200, what: opts.name },
      );
    } catch (err) {
      await kill();
      throw err;
    }
  };
  const close = async () => {
    await kill();
    opts.cleanup();
  };
  await start().catch(async (err: unknown) => {
    await close();
    throw err;
  });
  return {
    start,
    kill,
    stop: () => signal('SIGTERM'),
    pause: () => child?.kill('SIGSTOP'),
    resume: () => child?.kill('SIGCONT'),
    close,
  };
}
