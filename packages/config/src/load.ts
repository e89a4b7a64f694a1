import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { machineProblems } from './boot-checks.js';
import { ConfigError } from './config-error.js';
import { type LoadOptions, configFile, parseConfigFile, readConfigFile, resolveConfig } from './resolve.js';

/**
 * Loads a config object for `schema`, whose keys are lower-case Postfix-style names
 * (`myhostname`, `smtp_port`). The environment comes first: key `smtp_port` is read
 * from `SMTP_PORT`. Then the optional YAML file, then the schema's defaults.
 */
export function loadConfig<S extends z.ZodObject>(schema: S, opts: LoadOptions = {}): z.infer<S> {
  const file = configFile(opts);
  if (!file) return resolveConfig(schema, opts);
  return resolveConfig(schema, opts, {
    file,
    values: parseConfigFile(file, readConfigFile(file), parseYaml),
  });
}

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
