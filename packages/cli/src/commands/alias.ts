import type { Command } from 'commander';
import { normalizeAliasSource, normalizeTarget, requireLocalDomain } from '../addresses.js';
import type { CommandContext } from '../context.js';

export function registerAliasCommands(program: Command, ctx: CommandContext): void {
  const alias = program.command('alias').description('manage aliases and catch-all addresses');

  alias
    .command('add')
    .description('make SOURCE deliver to each TARGET (added to any targets it already has)')
    .argument('<source>', 'address of a local domain, or @domain for the catch-all')
    .argument('<target...>', 'addresses to deliver to, local or external')
    .action((source: string, targets: string[]) =>
      ctx.withDirectory(async (dir) => {
        const src = await dir.addAlias(source, targets);
        ctx.print(`added alias ${src} -> ${targets.map(normalizeTarget).join(', ')}`);
      }),
    );

  alias
    .command('del')
    .description('delete an alias, or only one of its targets')
    .argument('<source>', 'alias address or @domain')
    .argument('[target]', 'remove only this target; the alias goes when its last target does')
    .action((source: string, target: string | undefined) =>
      ctx.withDirectory(async (dir) => {
        const src = normalizeAliasSource(source);
        const tgt = target === undefined ? undefined : normalizeTarget(target);
        await dir.delAlias(src, tgt);
        ctx.print(tgt ? `removed ${tgt} from alias ${src}` : `deleted alias ${src}`);
      }),
    );

  alias
    .command('list')
    .description('list aliases as "source<TAB>target, target"')
    .argument('[domain]', 'only the aliases of this domain')
    .action((domain: string | undefined) =>
      ctx.withDirectory(async (dir) => {
        const d = domain === undefined ? undefined : await requireLocalDomain(dir, domain);
        for (const { source, targets } of await dir.listAliases(d))
          ctx.print(`${source}\t${targets.join(', ')}`);
      }),
    );
}
