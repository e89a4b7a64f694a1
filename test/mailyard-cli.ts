import { createRedisClient, runCli } from '@mailyard/cli';
import { REDIS_URL } from '@mailyard/testkit';

/** What a `mailyard` command printed, and its exit status. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `mailyard ...` in this process, as the operator would, with these settings
 * (AMQP_URL, REDIS_PREFIX...) on the machine's Redis, through the clients `createRedis`
 * makes.
 */
export async function mailyardIn(
  env: Record<string, string>,
  argv: string[],
  createRedis: typeof createRedisClient = createRedisClient,
): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, {
    env: { REDIS_URL, ...env },
    createRedis,
    stdin: process.stdin,
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
  });
  return { code, stdout, stderr };
}
