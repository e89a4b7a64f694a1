/**
 * Exit statuses of the `mailyard` command. Scripts branch on these, so a change is a
 * breaking change for operators.
 */
export const ExitCode = {
  ok: 0,
  /** The command was understood but could not be carried out (unknown domain, Redis down...). */
  failure: 1,
  /** `dns check`: nothing is wrong, but the resolver failed for something (EX_TEMPFAIL): try again. */
  tempfail: 75,
  /** The command line itself was wrong: unknown command or option, missing argument. */
  usage: 2,
  /** The configuration (environment or MAILYARD_CONFIG file) is invalid; as the services (EX_CONFIG). */
  config: 78,
  /** The operator pressed Ctrl-C at a prompt (128 + SIGINT). */
  interrupted: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** An error the CLI reports as one line on stderr, exiting with `exitCode`. */
export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: ExitCode = ExitCode.failure,
  ) {
    super(message);
  }
}

/** Errors in how the command was called, reported like commander's own (exit 2). */
export function usageError(message: string): CliError {
  return new CliError(message, ExitCode.usage);
}
