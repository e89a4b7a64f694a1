import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { machineProblems } from './boot-checks.js';
import { ConfigError } from './config-error.js';

export { ConfigError };

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

/**
 * Loads a config object for `schema`, whose keys are lower-case Postfix-style names
 * (`myhostname`, `smtp_port`). The environment comes first: key `smtp_port` is read
 * from `SMTP_PORT`. Then the optional YAML file, then the schema's defaults.
 */
export function loadConfig<S extends z.ZodObject>(schema: S, opts: LoadOptions = {}): z.infer<S> {
  const env = opts.env ?? process.env;
  const file = opts.file ?? env.MAILYARD_CONFIG;
  let fromFile: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError([
        `MAILYARD_CONFIG: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      ]);
    }
    try {
      const parsed: unknown = parseYaml(text);
      fromFile = parsed && typeof parsed === 'object' ? (parsed as Record<string, unknown>) : {};
    } catch (err) {
      throw new ConfigError([
        `MAILYARD_CONFIG: ${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`,
      ]);
    }
  }
  const source: Record<string, unknown> = {};
  const origin: Record<string, string> = {};
  const problems: string[] = [];
  const known = new Set(Object.keys(schema.shape));
  if (!opts.ignoreUnknownFileKeys) {
    for (const key of Object.keys(fromFile)) {
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
    } else if (key in fromFile) {
      source[key] = asWritten(key, fromFile[key]);
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

/**
 * Loads config for a main.ts, with the checks only the machine can judge (machineProblems):
 * on error prints each problem on its own line and exits 78 (EX_CONFIG). A check that could
 * not be made now (a DNS failure) is said, and under --check-config exits 75 (EX_TEMPFAIL).
 */
export async function loadConfigOrExit<S extends z.ZodObject>(
  service: string,
  schema: S,
  opts: LoadOptions = {},
): Promise<z.infer<S>> {
  let config: z.infer<S>;
  try {
    config = loadConfig(schema, opts);
  } catch (err) {
    if (err instanceof ConfigError) exitOnConfigError(service, err);
    throw err;
  }
  const { problems, unsure } = await machineProblems(config);
  for (const u of unsure) process.stderr.write(`${service}: cannot check now: ${u}\n`);
  if (problems.length) exitOnConfigError(service, new ConfigError(problems));
  if (process.argv.includes('--check-config')) {
    // not EX_CONFIG: the setting may well be right, asking again later can tell
    if (unsure.length) process.exit(EX_TEMPFAIL);
    process.stdout.write(`${service}: configuration is valid\n`);
    process.exit(0);
  }
  // a start goes on: its listen fails (not EX_CONFIG, so a supervisor starts it again) if
  // the name still cannot be resolved then
  return config;
}

/** Exit status of a process stopped by its configuration (sysexits.h EX_CONFIG). */
export const EX_CONFIG = 78;
/** Exit status of a check that could not be made now (sysexits.h EX_TEMPFAIL). */
export const EX_TEMPFAIL = 75;

/** Prints each problem on its own line, `<service>: config error: <problem>`, and exits EX_CONFIG. */
export function exitOnConfigError(service: string, err: ConfigError): never {
  for (const p of err.problems) process.stderr.write(`${service}: config error: ${p}\n`);
  process.exit(EX_CONFIG);
}
