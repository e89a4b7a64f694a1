export { buildCli, defaultDeps, runCli } from './cli.js';
export { commandGroups, type CommandGroup } from './commands/index.js';
export {
  cliConfigSchema,
  createRedisClient,
  type CliConfig,
  type CliDeps,
  type CliInput,
  type CommandContext,
  type TextSink,
} from './context.js';
export { CliError, ExitCode, usageError } from './errors.js';
