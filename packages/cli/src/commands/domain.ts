import type { Command } from 'commander';
import type { CommandContext } from '../context.js';

export function registerDomainCommands(program: Command, ctx: CommandContext): void {
  const domain = program.command('domain').description('manage the local domains');

  domain
    .command('add')
    .description('add a local domain: mail for it is accepted and delivered here')
    .argument('<domain>', 'domain name (internationalised names are stored in ASCII form)')
    .action((name: string) =>
      ctx.withOperations(async (ops) => {
        const { domain } = await ops.addDomain(name);
        ctx.print(`added domain ${domain}`);
      }),
    );

  domain
    .command('list')
    .description('list the local domains, one a line')
    .action(() =>
      ctx.withOperations(async (ops) => {
        for (const d of await ops.listDomains()) ctx.print(d);
      }),
    );

  domain
    .command('del')
    .description('delete a local domain that has no accounts or aliases left')
    .argument('<domain>', 'domain name')
    .action((name: string) =>
      ctx.withOperations(async (ops) => {
        ctx.print(`deleted domain ${await ops.delDomain(name)}`);
      }),
    );
}
