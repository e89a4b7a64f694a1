/**
 * Config errors are collected and reported together, one line per key, each naming
 * the key the way the operator wrote it (environment variable or file key).
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
  }
}
