import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/**
 * JSON logs (pino). Anything that could carry a secret is redacted by path, so a
 * password or an AUTH line can never reach a log even when an object is logged whole.
 */
export function createLogger(
  service: string,
  level: LoggerOptions['level'] = 'info',
  /** Where the lines go (stdout by default; tests read them from a stream). */
  destination?: DestinationStream,
): Logger {
  const options: LoggerOptions = {
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
  return destination ? pino(options, destination) : pino(options);
}
