import { Option, type Command } from 'commander';
import type { Redis } from 'ioredis';
import { Directory } from '@mailyard/directory';
import {
  DkimError,
  MAX_RSA_BITS,
  MIN_RSA_BITS,
  dnsRecord,
  generateDkimKey,
  type DkimAlgorithm,
} from './keys.js';
import { DkimKeyStore, type StoredDkimKey } from './store.js';

/** What the command group needs from the CLI (the `mailyard` CommandContext has it all but `fail`). */
export interface DkimCliContext {
  /** Writes one line to standard output. */
  print(line: string): void;
  /** Connects to Redis (the installation's key prefix), runs `fn`, disconnects. */
  withRedis<T>(fn: (redis: Redis) => Promise<T>): Promise<T>;
  /** The CLI's own error for a refusal: one sentence on stderr, exit status 1. */
  fail(message: string): Error;
}

/** Default selector: the algorithm and the month, so a rotation gets a fresh name (`rsa-202611`). */
export function defaultSelector(algorithm: DkimAlgorithm, now = new Date()): string {
  const month = `${now.getUTCFullYear()}${String(now.getUTCMonth() + 1).padStart(2, '0')}`;
  return `${algorithm}-${month}`;
}

/**
 * `mailyard dkim generate|list|show|delete`: DKIM signing keys per domain and selector.
 * Created with `program.command()`, so the program's settings (exitOverride, output)
 * reach these subcommands too.
 */
export function registerDkimCommands(program: Command, ctx: DkimCliContext): void {
  // a DkimError is the operator's to fix: report it the CLI's way
  const run = async (fn: (redis: Redis) => Promise<void>): Promise<void> => {
    try {
      await ctx.withRedis(fn);
    } catch (err) {
      if (err instanceof DkimError) throw ctx.fail(err.message);
      throw err;
    }
  };
  const normalize = (domain: string, selector: string) => {
    try {
      return DkimKeyStore.normalize(domain, selector);
    } catch (err) {
      if (err instanceof DkimError) throw ctx.fail(err.message);
      throw err;
    }
  };

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
      const bits = Number(opts.bits);
      if (!/^\d+$/.test(opts.bits)) throw ctx.fail(`--bits must be a whole number, got "${opts.bits}"`);
      const n = normalize(domain, opts.selector ?? defaultSelector(opts.algo));
      return run(async (redis) => {
        if (!(await new Directory(redis).isLocalDomain(n.domain)))
          throw new DkimError(
            `domain ${n.domain} is not a local domain (add it with: mailyard domain add ${n.domain})`,
          );
        const stored = await new DkimKeyStore(redis).add(
          n.domain,
          n.selector,
          generateDkimKey(opts.algo, bits),
        );
        const rec = dnsRecord(stored.domain, stored.selector, stored);
        ctx.print(
          `stored ${stored.algorithm} key ${stored.selector} for ${stored.domain}; publish this TXT record:`,
        );
        ctx.print('');
        ctx.print(rec.zoneLine);
        ctx.print('');
        ctx.print(`name:  ${rec.name}`);
        ctx.print(`value: ${rec.value}`);
      });
    });

  dkim
    .command('list')
    .description('list the keys, one a line: domain, selector, algorithm, created')
    .argument('[domain]', 'only this domain')
    .action((domain?: string) =>
      run(async (redis) => {
        for (const k of await new DkimKeyStore(redis).list(domain))
          ctx.print(`${k.domain}\t${k.selector}\t${k.algorithm}\t${k.created}`);
      }),
    );

  dkim
    .command('show')
    .description('print the DNS TXT records of a domain, or of one of its selectors')
    .argument('<domain>')
    .argument('[selector]')
    .action((domain: string, selector?: string) =>
      run(async (redis) => {
        const store = new DkimKeyStore(redis);
        const keys = selector
          ? [await store.get(domain, selector)].filter((k): k is StoredDkimKey => k !== null)
          : await store.list(domain);
        if (!keys.length)
          throw new DkimError(
            selector ? `no DKIM key with selector ${selector} for ${domain}` : `no DKIM keys for ${domain}`,
          );
        for (const k of keys) ctx.print(dnsRecord(k.domain, k.selector, k).zoneLine);
      }),
    );

  dkim
    .command('delete')
    .description('delete a key (remove its DNS record only once mail signed with it has been delivered)')
    .argument('<domain>')
    .argument('<selector>')
    .action((domain: string, selector: string) => {
      const n = normalize(domain, selector);
      return run(async (redis) => {
        await new DkimKeyStore(redis).remove(n.domain, n.selector);
        ctx.print(`deleted DKIM key ${n.selector} of ${n.domain}`);
      });
    });
}
