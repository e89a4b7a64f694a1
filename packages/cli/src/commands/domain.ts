import type { Command } from 'commander';
import { normalizeDomainArg } from '../addresses.js';
import type { CommandContext } from '../context.js';

export function registerDomainCommands(program: Command, ctx: CommandContext): void {
  const domain = program.command('domain').description('manage the local domains');

  domain
    .command('add')
    .description('add a local domain: mail for it is accepted and delivered here')
    .argument('<domain>', 'domain name (internationalised names are stored in ASCII form)')
    .action((name: string) =>
      ctx.withDirectory(async (dir) => {
        ctx.print(`added domain ${await dir.addDomain(name)}`);
      }),
    );

  domain
    .command('list')
    .description('list the local domains, one a line')
    .action(() =>
      ctx.withDirectory(async (dir) => {
        for (const d of await dir.listDomains()) ctx.print(d);
      }),
    );

  domain
    .command('del')
    .description('delete a local domain that has no accounts or aliases left')
    .argument('<domain>', 'domain name')
    .action((name: string) =>
      ctx.withDirectory(async (dir) => {
        const d = normalizeDomainArg(name);
        await dir.delDomain(d);
        ctx.print(`deleted domain ${d}`);
      }),
    );
}
