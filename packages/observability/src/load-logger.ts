// createLogger (logger.ts) for a program that may never log, a `mailyard` command: pino
// is imported at the first logger, not when the program starts. Apart from logger.ts, so
// that a bundle using only this module has no import of pino at its top.
import type { Logger, LoggerOptions } from 'pino';

/** A logger as createLogger makes it, to stdout. */
export async function loadLogger(service: string, level: LoggerOptions['level'] = 'info'): Promise<Logger> {
  const { pino } = await import('pino');
  return pino(loggerOptions(service, level));
}

/** What createLogger gives pino: the service's name and the redacted paths. */
export function loggerOptions(service: string, level: LoggerOptions['level']): LoggerOptions {
  return {
    name: service,
    level,
    base: { service },
    redact: {
      paths: [
        'password',
        '*.password',
        'pass',
        '*.pass',
        'auth.credentials',
        'session.user.password',
        'secret',
        '*.secret',
        // ioredis puts a failed command on its error: the values a write carried (a new
        // TOTP secret, a session's CSRF token) would be logged with it; its name stays
        '*.command.args',
        '*.previousErrors[*].command.args',
      ],
      censor: '[redacted]',
    },
  };
}
