import type { Command } from 'commander';
import { formatAuditEntry } from '@mailyard/admin';
import type { CommandContext } from '../context.js';
import { usageError } from '../errors.js';

/** `mailyard audit`: who changed what, from the CLI and the admin console alike. */
export function registerAuditCommands(program: Command, ctx: CommandContext): void {
  program
    .command('audit')
    .description('print the audit log of administrative actions, newest first: time, actor, action, target')
    .option('-n, --limit <n>', 'how many entries (1-1000)', '50')
    .action((opts: { limit: string }) => {
      const n = Number(opts.limit);
      if (!/^\d+$/.test(opts.limit) || n < 1 || n > 1000)
        throw usageError(`--limit must be a whole number from 1 to 1000, got "${opts.limit}"`);
      return ctx.withOperations(async (ops) => {
        for (const e of await ops.readAudit({ limit: n })) ctx.print(formatAuditEntry(e));
      });
    });
}
