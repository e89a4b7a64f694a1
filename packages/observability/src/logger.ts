import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import { loggerOptions } from './load-logger.js';

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
  const options = loggerOptions(service, level);
  return destination ? pino(options, destination) : pino(options);
}
