import { Option, type Command } from 'commander';
import { DnsUnavailableError, dnsCheckerFromConfig } from '@mailyard/admin';
import { MAX_RSA_BITS, MIN_RSA_BITS, type DkimAlgorithm } from '@mailyard/dkim';
import type { CommandContext } from '../context.js';
import { CliError, ExitCode } from '../errors.js';

interface KeyOptions {
  selector?: string;
  algo: DkimAlgorithm;
  bits: string;
}

/** The key options of `generate` and `rotate`: algorithm and RSA size. */
const keyOptions = (cmd: Command) =>
  cmd
    .addOption(new Option('-a, --algo <algo>', 'key algorithm').choices(['rsa', 'ed25519']).default('rsa'))
    .option('-b, --bits <bits>', `RSA key size, ${MIN_RSA_BITS}-${MAX_RSA_BITS}`, String(MIN_RSA_BITS));

function keySpec(opts: KeyOptions): { algorithm: DkimAlgorithm; bits: number; selector?: string } {
  if (!/^\d+$/.test(opts.bits)) throw new CliError(`--bits must be a whole number, got "${opts.bits}"`);
  return {
    algorithm: opts.algo,
    bits: Number(opts.bits),
    ...(opts.selector ? { selector: opts.selector } : {}),
  };
}

/** `mailyard dkim generate|rotate|activate|retire|list|show|delete`: DKIM signing keys per domain and selector. */
export function registerDkimCommands(program: Command, ctx: CommandContext): void {
  const dkim = program
    .command('dkim')
    .description('DKIM signing keys: the MSA signs with the newest RSA and Ed25519 key of the From: domain');

  const generate = dkim
    .command('generate')
    .description('generate a key, store it, and print the DNS TXT record to publish')
    .argument('<domain>', 'a local domain')
    .option('-s, --selector <selector>', 'selector (default: <algo>-<yyyymm>)');
  keyOptions(generate).action((domain: string, opts: KeyOptions) => {
    const key = keySpec(opts);
    return ctx.withOperations(async (ops) => {
      const k = await ops.generateDkimKey(domain, key);
      ctx.print(`stored ${k.algorithm} key ${k.selector} for ${k.domain}; publish this TXT record:`);
      ctx.print('');
      ctx.print(k.record.zoneLine);
      ctx.print('');
      ctx.print(`name:  ${k.record.name}`);
      ctx.print(`value: ${k.record.value}`);
      if (k.pending)
        ctx.print(
          `\nAnother ${k.algorithm} key signs ${k.domain} now; once the record is visible in DNS, run: mailyard dkim activate ${k.domain} ${k.selector}`,
        );
    });
  });

  const rotate = dkim
    .command('rotate')
    .description(
      'start a key rotation: a new key under a new selector, which signs once `dkim activate` sees its record in DNS; the old key signs until then, and stays published until `dkim retire`',
    )
    .argument('<domain>', 'a local domain')
    .option('-s, --selector <selector>', 'selector of the new key (default: <algo>-<yyyymm>)');
  keyOptions(rotate).action((domain: string, opts: KeyOptions) => {
    const spec = keySpec(opts);
    return ctx.withOperations(async (ops) => {
      const { key, replaces } = await ops.rotateDkimKey(domain, spec);
      if (key.pending) {
        ctx.print(
          `stored ${key.algorithm} key ${key.selector} for ${key.domain}; ${replaces.map((k) => k.selector).join(', ')} signs until it is activated.`,
        );
        ctx.print('Publish its TXT record now, and keep the old ones published:');
      } else {
        ctx.print(`stored ${key.algorithm} key ${key.selector} for ${key.domain}; it signs from now on.`);
        ctx.print('Publish its TXT record now:');
      }
      ctx.print('');
      for (const k of [key, ...replaces]) ctx.print(k.record.zoneLine);
      if (key.pending)
        ctx.print(
          `\nOnce the record is visible in DNS, run: mailyard dkim activate ${key.domain} ${key.selector}`,
        );
      for (const k of replaces)
        ctx.print(
          `\nOnce mail signed with ${k.selector} has been delivered (a few days), run: mailyard dkim retire ${k.domain} ${k.selector}`,
        );
    });
  });

  dkim
    .command('activate')
    .description(
      "let a rotation's new key sign: refused until DNS (DNS_SERVERS, without a cache) answers its record with the same public key",
    )
    .argument('<domain>')
    .argument('<selector>')
    .action((domain: string, selector: string) =>
      ctx.withOperations(async (ops, config) => {
        let res;
        try {
          res = await ops.activateDkimKey(domain, selector, dnsCheckerFromConfig(config));
        } catch (err) {
          if (err instanceof DnsUnavailableError) throw new CliError(err.message, ExitCode.tempfail);
          throw err;
        }
        const { key, activated } = res;
        ctx.print(
          activated
            ? `${key.selector} signs mail of ${key.domain} from now on (within 30 s); keep the old records published until you retire them`
            : `${key.selector} already signs mail of ${key.domain}`,
        );
      }),
    );

  dkim
    .command('retire')
    .description('end a rotation: delete a key that no longer signs; then remove its DNS record')
    .argument('<domain>')
    .argument('<selector>')
    .action((domain: string, selector: string) =>
      ctx.withOperations(async (ops) => {
        const k = await ops.retireDkimKey(domain, selector);
        ctx.print(`retired DKIM key ${k.selector} of ${k.domain}; remove its record from DNS:`);
        ctx.print(k.record.zoneLine);
      }),
    );

  dkim
    .command('list')
    .description(
      'list the keys, one a line: domain, selector, algorithm, created, state (signing, pending: waits for `dkim activate`, retiring: replaced, to retire)',
    )
    .argument('[domain]', 'only this domain')
    .action((domain?: string) =>
      ctx.withOperations(async (ops) => {
        // the state last, so scripts reading the first four columns keep working
        for (const k of await ops.listDkimKeys(domain))
          ctx.print(
            `${k.domain}\t${k.selector}\t${k.algorithm}\t${k.created}\t${k.signing ? 'signing' : k.pending ? 'pending' : 'retiring'}`,
          );
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
