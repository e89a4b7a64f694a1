import { Command, CommanderError } from 'commander';
import { CleanupPendingError, OperationError } from '@mailyard/admin';
import { DirectoryError } from '@mailyard/directory';
import { isOutOfMemory } from '@mailyard/runtime/redis';
import { commandGroups } from './commands/index.js';
import { type CliDeps, type TextSink, createContext, createRedisClient } from './context.js';
import { CliError, ExitCode } from './errors.js';

/**
 * Builds the `mailyard` program over `deps`. Nothing is read or connected until a
 * command runs; errors are thrown to the caller (see runCli), never turned into
 * process.exit, so tests run the real program in-process.
 */
export function buildCli(deps: CliDeps): Command {
  const program = new Command('mailyard')
    .description(
      'Administer a Mailyard installation: domains, accounts and aliases, kept in Redis.\nEvery change is written to the audit log (mailyard audit).',
    )
    .addHelpText(
      'after',
      '\nConnects to Redis at $REDIS_URL (default redis://127.0.0.1:6379), keys under $REDIS_PREFIX.',
    )
    // Settings here are copied to every subcommand, so they come before the groups.
    .exitOverride()
    .configureOutput({
      writeOut: (s) => void deps.stdout.write(s),
      writeErr: (s) => void deps.stderr.write(s),
      outputError: (s, write) => write(formatUsageError(s)),
    })
    .showSuggestionAfterError(true);
  const ctx = createContext(deps);
  for (const register of commandGroups) register(program, ctx);
  return program;
}

/** Runs one command line (without node and script) and returns the exit status. */
export async function runCli(argv: readonly string[], deps: CliDeps): Promise<number> {
  try {
    await buildCli(deps).parseAsync([...argv], { from: 'user' });
    return ExitCode.ok;
  } catch (err) {
    return reportError(err, deps.stderr);
  }
}

export function defaultDeps(): CliDeps {
  return {
    env: process.env,
    createRedis: createRedisClient,
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
  };
}

function reportError(err: unknown, stderr: TextSink): number {
  if (err instanceof CommanderError) {
    // --help and --version end here with 0; commander has already written its message.
    if (err.exitCode === 0) return ExitCode.ok;
    return ExitCode.usage;
  }
  if (err instanceof CliError) {
    stderr.write(`mailyard: ${err.message}\n`);
    return err.exitCode;
  }
  // the account's earlier deletion is not finished and Redis still fails: worth a retry
  if (err instanceof CleanupPendingError) {
    stderr.write(`mailyard: ${err.message}\n`);
    return ExitCode.tempfail;
  }
  if (err instanceof DirectoryError || err instanceof OperationError) {
    stderr.write(`mailyard: ${err.message}\n`);
    return ExitCode.failure;
  }
  const message = err instanceof Error ? err.message : String(err);
  // Redis at its maxmemory refuses what needs room: the command did not run, and will once
  // there is room (deleting keys, or a larger maxmemory), so a retry is worth it. Said as
  // Redis said it, or as the cause of a store's own error (the directory's "unavailable").
  if (isOutOfMemory(err) || (err instanceof Error && isOutOfMemory(err.cause))) {
    stderr.write(
      'mailyard: Redis is full (at its maxmemory) and refused the change: try again once it has room\n',
    );
    return ExitCode.tempfail;
  }
  stderr.write(`mailyard: unexpected error: ${message.split('\n')[0]}\n`);
  return ExitCode.failure;
}

/**
 * commander's "error: unknown option '--x'\n(Did you mean --y?)" as one line in our
 * format. An `--opt=value` it did not recognise may carry a secret: the value is cut.
 */
function formatUsageError(text: string): string {
  const line = text
    .replace(/^error: /, '')
    .replace(/'(--[^'=\s]+)=[^']*'/g, "'$1=...'")
    .trim()
    .replace(/\s*\n\s*/g, ' ');
  return `mailyard: ${line}\n`;
}
