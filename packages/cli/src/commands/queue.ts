import type { Command } from 'commander';
import { registerQueueCommands } from '@mailyard/queue-admin/cli';
import { Operations } from '@mailyard/admin';
import { cliActor, type CommandContext } from '../context.js';
import { CliError } from '../errors.js';

/**
 * `mailyard queue list|show|retry|delete`: deferred mail. The commands live in
 * @mailyard/queue-admin, next to the index outbound-relay writes; this only hands them
 * the CLI's environment, output and Redis connection.
 */
export function registerQueueGroup(program: Command, ctx: CommandContext): void {
  registerQueueCommands(program, {
    env: ctx.deps.env,
    print: (line) => ctx.print(line),
    withRedis: (fn) => ctx.withRedis(fn),
    fail: (message) => new CliError(message),
    operations: (deps) => new Operations(deps.redis, cliActor(ctx.deps.env)).queue(deps),
  });
}
