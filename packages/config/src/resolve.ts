// Settings from their sources: the environment, the YAML file's values, the schema's
// defaults. Nothing here imports the YAML parser: load.ts does, for the services, and
// loadConfigAsync only when there is a file (the package is "sideEffects": false, so a
// bundle that uses only this module leaves the parser out).
import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { ConfigError } from './config-error.js';

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** YAML file with the same keys in lower case (Postfix style); defaults to $MAILYARD_CONFIG. */
  file?: string;
  /** Values that win over everything (tests and composition). */
  overrides?: Record<string, unknown>;
  /**
   * Accept file keys this schema does not know (a file shared by several services, read
   * by a tool that needs only some keys). Services keep the default, so a typo is caught.
   */
  ignoreUnknownFileKeys?: boolean;
}

/** A YAML parser: `parse` of the yaml package, imported by the caller as it can. */
export type ParseYaml = (text: string) => unknown;

/**
 * As loadConfig (load.ts), but the YAML parser is imported only when there is a file to
 * parse: for a short-lived program (the `mailyard` CLI) whose every start counts, and
 * which often has no file at all.
 */
export async function loadConfigAsync<S extends z.ZodObject>(
  schema: S,
  opts: LoadOptions = {},
): Promise<z.infer<S>> {
  const file = configFile(opts);
  if (!file) return resolveConfig(schema, opts);
  const text = readConfigFile(file);
  const { parse } = await import('yaml');
  return resolveConfig(schema, opts, { file, values: parseConfigFile(file, text, parse) });
}

/** The YAML file to read, if any: `file`, else $MAILYARD_CONFIG. */
export function configFile(opts: LoadOptions): string | undefined {
  return opts.file ?? (opts.env ?? process.env).MAILYARD_CONFIG;
}

export function readConfigFile(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([
      `MAILYARD_CONFIG: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    ]);
  }
}

export function parseConfigFile(file: string, text: string, parse: ParseYaml): Record<string, unknown> {
  try {
    const parsed: unknown = parse(text);
    return parsed && typeof parsed === 'object' ? (parsed as Record<string, unknown>) : {};
  } catch (err) {
    throw new ConfigError([
      `MAILYARD_CONFIG: ${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`,
    ]);
  }
}

/**
 * The config object for `schema`, whose keys are lower-case Postfix-style names
 * (`myhostname`, `smtp_port`). The environment comes first: key `smtp_port` is read
 * from `SMTP_PORT`. Then the file's values (already read), then the schema's defaults.
 */
export function resolveConfig<S extends z.ZodObject>(
  schema: S,
  opts: LoadOptions,
  fromFile: { file: string; values: Record<string, unknown> } = { file: '', values: {} },
): z.infer<S> {
  const env = opts.env ?? process.env;
  const file = fromFile.file;
  const source: Record<string, unknown> = {};
  const origin: Record<string, string> = {};
  const problems: string[] = [];
  const known = new Set(Object.keys(schema.shape));
  if (!opts.ignoreUnknownFileKeys) {
    for (const key of Object.keys(fromFile.values)) {
      if (!known.has(key)) problems.push(`${key}: unknown key in ${file}`);
    }
  }
  for (const key of known) {
    const envName = key.toUpperCase();
    if (opts.overrides && key in opts.overrides) {
      source[key] = opts.overrides[key];
      origin[key] = key;
    } else if (env[envName] !== undefined && env[envName] !== '') {
      source[key] = asWritten(key, env[envName]);
      origin[key] = envName;
    } else if (key in fromFile.values) {
      source[key] = asWritten(key, fromFile.values[key]);
      origin[key] = `${key} (in ${file})`;
    }
  }
  const result = schema.safeParse(source);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const key = String(issue.path[0] ?? '');
      const name = origin[key] ?? key.toUpperCase();
      const got = key in source ? `, got ${JSON.stringify(source[key])}` : '';
      problems.push(`${name}: ${issue.message}${got}`);
    }
  }
  if (problems.length) throw new ConfigError(problems);
  const data = result.data as Record<string, unknown>;
  for (const [urlKey, fileKey] of PASSWORD_FILES) {
    const path = data[fileKey];
    if (typeof path !== 'string' || typeof data[urlKey] !== 'string') continue;
    const name = origin[fileKey] ?? fileKey.toUpperCase();
    let password: string;
    try {
      password = readFileSync(path, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new ConfigError([
        `${name}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      ]);
    }
    if (!password) throw new ConfigError([`${name}: ${path} is empty`]);
    const url = new URL(data[urlKey]);
    url.password = encodeURIComponent(password);
    data[urlKey] = url.toString().replace(/\/$/, '');
  }
  return data as z.infer<S>;
}

/**
 * A setting as meant: spaces around a value (an `.env` line `KEY= value`, a quoted YAML
 * value) are not part of it, as Postfix strips them around `main.cf` values. A password is
 * taken as given: a space may be part of it.
 */
function asWritten(key: string, value: unknown): unknown {
  return typeof value === 'string' && !key.endsWith('password') ? value.trim() : value;
}

/** Connection URLs whose password may come from a file (a compose or Kubernetes secret). */
const PASSWORD_FILES = [
  ['amqp_url', 'amqp_password_file'],
  ['redis_url', 'redis_password_file'],
] as const;
