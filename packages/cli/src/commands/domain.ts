import type { Command } from 'commander';
import type { RequiredRecord } from '@mailyard/admin';
import type { CommandContext } from '../context.js';

function printRecords(ctx: CommandContext, domain: string, host: string, records: RequiredRecord[]): void {
  ctx.print('');
  ctx.print(`Publish these DNS records for ${domain} (${host} is this server, MYHOSTNAME;`);
  ctx.print(`check them later with: mailyard domain records ${domain}):`);
  ctx.print('');
  for (const r of records) ctx.print(r.zoneLine);
  if (!records.some((r) => r.purpose.startsWith('dkim:')))
    ctx.print(
      `\nNo DKIM key: mail from ${domain} is sent unsigned (add one with: mailyard dkim generate ${domain})`,
    );
}

export function registerDomainCommands(program: Command, ctx: CommandContext): void {
  const domain = program.command('domain').description('manage the local domains');

  domain
    .command('add')
    .description(
      'add a local domain: mail for it is accepted and delivered here; makes its DKIM keys (RSA and Ed25519) and prints the DNS records to publish',
    )
    .argument('<domain>', 'domain name (internationalised names are stored in ASCII form)')
    .option('--no-dkim', 'make no DKIM keys (mail from the domain goes out unsigned until `dkim generate`)')
    .action((name: string, opts: { dkim: boolean }) =>
      ctx.withOperations(async (ops, config) => {
        const { domain, dkim } = await ops.addDomain(name, { dkim: opts.dkim });
        ctx.print(
          dkim.length
            ? `added domain ${domain} with DKIM keys ${dkim.map((k) => k.selector).join(' and ')}`
            : `added domain ${domain}`,
        );
        printRecords(ctx, domain, config.myhostname, await ops.domainRecords(domain, config.myhostname));
      }),
    );

  domain
    .command('records')
    .description('print the DNS records a local domain needs, ready to paste into its zone')
    .argument('<domain>', 'a local domain')
    .action((name: string) =>
      ctx.withOperations(async (ops, config) => {
        const records = await ops.domainRecords(name, config.myhostname);
        for (const r of records) ctx.print(r.zoneLine);
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
    .description('delete a local domain that has no accounts or aliases left, and its DKIM keys')
    .argument('<domain>', 'domain name')
    .action((name: string) =>
      ctx.withOperations(async (ops) => {
        const { domain, dkim } = await ops.delDomain(name);
        ctx.print(
          dkim.length
            ? `deleted domain ${domain} and its DKIM keys ${dkim.join(', ')}; their DNS records can go`
            : `deleted domain ${domain}`,
        );
      }),
    );
}
