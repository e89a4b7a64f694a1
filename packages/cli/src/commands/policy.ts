import type { Command } from 'commander';
import { registerPolicyCommands as registerPolicy } from '@mailyard/policy-rules/command';
import { Operations } from '@mailyard/admin';
import { cliActor, type CommandContext } from '../context.js';
import { CliError } from '../errors.js';

/** `mailyard policy ...`: the group lives in @mailyard/policy-rules, next to the rules. */
export function registerPolicyCommands(program: Command, ctx: CommandContext): void {
  registerPolicy(program, {
    print: (line) => ctx.print(line),
    withRedis: (fn) => ctx.withRedis(fn),
    fail: (message) => new CliError(message),
    rules: (redis) => new Operations(redis, cliActor(ctx.deps.env)).policy(),
  });
}
