import type { Command } from 'commander';
import { registerDkimCommands as registerDkim } from '@mailyard/dkim/command';
import type { CommandContext } from '../context.js';
import { CliError } from '../errors.js';

/** `mailyard dkim ...`: the group lives in @mailyard/dkim, next to the signing code. */
export function registerDkimCommands(program: Command, ctx: CommandContext): void {
  registerDkim(program, {
    print: (line) => ctx.print(line),
    withRedis: (fn) => ctx.withRedis(fn),
    fail: (message) => new CliError(message),
  });
}
