import type { Command } from 'commander';
import type { CommandContext } from '../context.js';

export function registerAliasCommands(program: Command, ctx: CommandContext): void {
  const alias = program.command('alias').description('manage aliases and catch-all addresses');

  alias
    .command('add')
    .description('make SOURCE deliver to each TARGET (added to any targets it already has)')
    .argument('<source>', 'address of a local domain, or @domain for the catch-all')
    .argument('<target...>', 'addresses to deliver to, local or external')
    .action((source: string, targets: string[]) =>
      ctx.withOperations(async (ops) => {
        const added = await ops.addAlias(source, targets);
        ctx.print(`added alias ${added.source} -> ${added.added.join(', ')}`);
      }),
    );

  alias
    .command('del')
    .description('delete an alias, or only one of its targets')
    .argument('<source>', 'alias address or @domain')
    .argument('[target]', 'remove only this target; the alias goes when its last target does')
    .action((source: string, target: string | undefined) =>
      ctx.withOperations(async (ops) => {
        const d = await ops.delAlias(source, target);
        ctx.print(d.target ? `removed ${d.target} from alias ${d.source}` : `deleted alias ${d.source}`);
      }),
    );

  alias
    .command('list')
    .description('list aliases as "source<TAB>target, target"')
    .argument('[domain]', 'only the aliases of this domain')
    .action((domain: string | undefined) =>
      ctx.withOperations(async (ops) => {
        for (const { source, targets } of await ops.listAliases(domain))
          ctx.print(`${source}\t${targets.join(', ')}`);
      }),
    );
}
