import { Option, type Command } from 'commander';
import { MAX_RSA_BITS, MIN_RSA_BITS, type DkimAlgorithm } from '@mailyard/dkim';
import type { CommandContext } from '../context.js';
import { CliError } from '../errors.js';

/** `mailyard dkim generate|list|show|delete`: DKIM signing keys per domain and selector. */
export function registerDkimCommands(program: Command, ctx: CommandContext): void {
  const dkim = program
    .command('dkim')
    .description('DKIM signing keys: the MSA signs with the newest RSA and Ed25519 key of the From: domain');

  dkim
    .command('generate')
    .description('generate a key, store it, and print the DNS TXT record to publish')
    .argument('<domain>', 'a local domain')
    .option('-s, --selector <selector>', 'selector (default: <algo>-<yyyymm>)')
    .addOption(new Option('-a, --algo <algo>', 'key algorithm').choices(['rsa', 'ed25519']).default('rsa'))
    .option('-b, --bits <bits>', `RSA key size, ${MIN_RSA_BITS}-${MAX_RSA_BITS}`, String(MIN_RSA_BITS))
    .action((domain: string, opts: { selector?: string; algo: DkimAlgorithm; bits: string }) => {
      if (!/^\d+$/.test(opts.bits)) throw new CliError(`--bits must be a whole number, got "${opts.bits}"`);
      return ctx.withOperations(async (ops) => {
        const k = await ops.generateDkimKey(domain, {
          algorithm: opts.algo,
          bits: Number(opts.bits),
          ...(opts.selector ? { selector: opts.selector } : {}),
        });
        ctx.print(`stored ${k.algorithm} key ${k.selector} for ${k.domain}; publish this TXT record:`);
        ctx.print('');
        ctx.print(k.record.zoneLine);
        ctx.print('');
        ctx.print(`name:  ${k.record.name}`);
        ctx.print(`value: ${k.record.value}`);
      });
    });

  dkim
    .command('list')
    .description('list the keys, one a line: domain, selector, algorithm, created')
    .argument('[domain]', 'only this domain')
    .action((domain?: string) =>
      ctx.withOperations(async (ops) => {
        for (const k of await ops.listDkimKeys(domain))
          ctx.print(`${k.domain}\t${k.selector}\t${k.algorithm}\t${k.created}`);
      }),
    );

  dkim
    .command('show')
    .description('print the DNS TXT records of a domain, or of one of its selectors')
    .argument('<domain>')
    .argument('[selector]')
    .action((domain: string, selector?: string) =>
      ctx.withOperations(async (ops) => {
        for (const k of await ops.dkimKeys(domain, selector)) ctx.print(k.record.zoneLine);
      }),
    );

  dkim
    .command('delete')
    .description('delete a key (remove its DNS record only once mail signed with it has been delivered)')
    .argument('<domain>')
    .argument('<selector>')
    .action((domain: string, selector: string) =>
      ctx.withOperations(async (ops) => {
        const n = await ops.deleteDkimKey(domain, selector);
        ctx.print(`deleted DKIM key ${n.selector} of ${n.domain}`);
      }),
    );
}
