import { userInfo } from 'node:os';
import type { Readable } from 'node:stream';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { redactUrl } from '@mailyard/bus';
import { OperationError, Operations } from '@mailyard/admin';
import {
  ConfigError,
  clientEndpointsSchema,
  commonSchema,
  loadConfigAsync,
  mailStoreSchema,
  sendingAddressSchema,
  tlsFilesSchema,
} from '@mailyard/config';
import { Directory, DirectoryError } from '@mailyard/directory';
import { CliError, ExitCode } from './errors.js';

/** Where the CLI writes: process.stdout/stderr, or a buffer in tests. */
export interface TextSink {
  write(text: string): unknown;
}

/** Standard input; `isTTY` and `setRawMode` exist when it is a terminal (password prompt). */
export type CliInput = Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };

/** What the CLI needs from Redis to connect; the subset of the boot config it reads. */
export const cliConfigSchema = z.object({
  redis_url: commonSchema.redis_url,
  redis_password_file: commonSchema.redis_password_file,
  redis_prefix: commonSchema.redis_prefix,
  /** The mail server's name, for the DNS records `domain add` prints. */
  myhostname: commonSchema.myhostname,
  /** `dns check`: the resolvers to ask (default: the system's). */
  dns_servers: commonSchema.dns_servers,
  /** `dns check`: the addresses mail leaves from, the client ports, the certificate. */
  ...sendingAddressSchema,
  ...clientEndpointsSchema,
  tls_cert_file: tlsFilesSchema.tls_cert_file,
  /** `backup` and `restore`: the mail store, as delivery and retrieval have it. */
  ...mailStoreSchema,
});
export type CliConfig = z.infer<typeof cliConfigSchema>;

/** Everything the CLI touches outside itself, so tests run it in-process. */
export interface CliDeps {
  /** Read for REDIS_URL, REDIS_PREFIX and MAILYARD_CONFIG. */
  env: NodeJS.ProcessEnv;
  /**
   * Creates an unconnected client (`lazyConnect`) with the config's URL and key prefix.
   * The CLI connects it itself so that an unreachable Redis is one error, not a hang.
   */
  createRedis(config: CliConfig): Redis | Promise<Redis>;
  stdin: CliInput;
  stdout: TextSink;
  stderr: TextSink;
  /** How long connecting to Redis may take in all (default CONNECT_DEADLINE_MS). */
  connectDeadlineMs?: number;
}

/**
 * ioredis's connectTimeout covers only the TCP handshake: a server that accepts and
 * never answers (a wrong port, a stuck proxy) would hold the ready check for as long
 * as the command timeout allows, several times over. The CLI gives up after this.
 */
export const CONNECT_DEADLINE_MS = 5000;

/**
 * A Redis client that fails fast: one connection attempt with a short timeout, no
 * reconnection and no offline queue, so a down Redis becomes an error within seconds.
 * ioredis is loaded here, at the first command that connects, not at every start.
 */
export async function createRedisClient(config: CliConfig): Promise<Redis> {
  const { Redis } = await import('ioredis');
  return new Redis(config.redis_url, {
    keyPrefix: config.redis_prefix,
    lazyConnect: true,
    connectTimeout: 3000,
    commandTimeout: 5000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    reconnectOnError: () => false,
  });
}

/** What each command group gets: output helpers and scoped access to Redis. */
export interface CommandContext {
  readonly deps: CliDeps;
  /** Writes one line to stdout. */
  print(line: string): void;
  /** Loads the config, connects to Redis, runs `fn` and always disconnects. */
  withRedis<T>(fn: (redis: Redis, config: CliConfig) => Promise<T>): Promise<T>;
  /** `withRedis` with the directory over that connection. */
  withDirectory<T>(fn: (directory: Directory) => Promise<T>): Promise<T>;
  /** `withRedis` with the administrative operations (audited as `cli:<system user>`). */
  withOperations<T>(fn: (ops: Operations, config: CliConfig) => Promise<T>): Promise<T>;
}

/** Who the audit log names for a CLI run: the system user, as `cli:root`. */
export function cliActor(env: NodeJS.ProcessEnv): string {
  let user = env.SUDO_USER || env.USER || env.LOGNAME;
  if (!user) {
    try {
      user = userInfo().username;
    } catch {
      user = 'unknown';
    }
  }
  return `cli:${user}`;
}

export function createContext(deps: CliDeps): CommandContext {
  const withRedis = async <T>(fn: (redis: Redis, config: CliConfig) => Promise<T>): Promise<T> => {
    const config = await loadCliConfig(deps.env);
    const where = redactUrl(config.redis_url);
    const redis = await deps.createRedis(config);
    // Failures surface through connect() and the commands, but their cause (ECONNREFUSED,
    // ETIMEDOUT, WRONGPASS) only in the 'error' event; keep the last one to report.
    let lastError: unknown;
    redis.on('error', (err: unknown) => (lastError = err));
    try {
      try {
        await connectWithin(redis, deps.connectDeadlineMs ?? CONNECT_DEADLINE_MS);
      } catch (err) {
        const cause = err instanceof DeadlineError ? err : (lastError ?? err);
        throw new CliError(`Redis unreachable at ${where} (${reason(cause)})`);
      }
      try {
        return await fn(redis, config);
      } catch (err) {
        if (
          err instanceof CliError ||
          err instanceof DirectoryError ||
          err instanceof OperationError ||
          redis.status === 'ready'
        )
          throw err;
        throw new CliError(`lost the connection to Redis at ${where} (${reason(lastError ?? err)})`);
      }
    } finally {
      redis.disconnect();
    }
  };
  return {
    deps,
    print: (line) => void deps.stdout.write(`${line}\n`),
    withRedis,
    withDirectory: (fn) => withRedis((redis) => fn(new Directory(redis))),
    withOperations: (fn) =>
      withRedis((redis, config) => fn(new Operations(redis, cliActor(deps.env)), config)),
  };
}

class DeadlineError extends Error {}

async function connectWithin(redis: Redis, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineError(`no answer within ${ms / 1000} s`)), ms);
  });
  const connecting = redis.connect();
  // After the deadline the connection is dropped in withRedis; its rejection is expected.
  connecting.catch(() => undefined);
  try {
    await Promise.race([connecting, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function loadCliConfig(env: NodeJS.ProcessEnv): Promise<CliConfig> {
  try {
    return await loadConfigAsync(cliConfigSchema, { env, ignoreUnknownFileKeys: true });
  } catch (err) {
    if (err instanceof ConfigError)
      throw new CliError(`config error: ${err.problems.join('; ')}`, ExitCode.config);
    throw err;
  }
}

function reason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return (e?.message || e?.code || String(err)).split('\n')[0]!;
}
