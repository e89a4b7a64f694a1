import { Command, Option } from 'commander';
import type { Redis } from 'ioredis';
import { DkimError, dnsRecord, generateDkimKey, MIN_RSA_BITS, type DkimAlgorithm } from './keys.js';
import { DkimKeyStore, type StoredDkimKey } from './store.js';

export interface DkimCommandDeps {
  /** Runs `fn` with a connected Redis client (keys under the installation's prefix) and closes it after. */
  withRedis<T>(fn: (redis: Redis) => Promise<T>): Promise<T>;
  /** Whether `domain` is one of ours; keys are only generated for local domains. */
  isLocalDomain(redis: Redis, domain: string): Promise<boolean>;
  /** Standard output (defaults to process.stdout). */
  out?: (text: string) => void;
}

/** Default selector: the algorithm and the month, so a rotation gets a fresh name (`rsa-202611`). */
export function defaultSelector(algorithm: DkimAlgorithm, now = new Date()): string {
  const month = `${now.getUTCFullYear()}${String(now.getUTCMonth() + 1).padStart(2, '0')}`;
  return `${algorithm}-${month}`;
}

function describe(k: StoredDkimKey): string {
  return `${k.domain}\t${k.selector}\t${k.algorithm}\t${k.created}`;
}

/**
 * `mailyard dkim ...`: generate, list, show and delete DKIM signing keys.
 * Every refusal ends the command with exit code 1 and one sentence on stderr.
 */
export function dkimCommand(deps: DkimCommandDeps): Command {
  const out = deps.out ?? ((t: string) => void process.stdout.write(t));
  const dkim = new Command('dkim').description('DKIM signing keys (one or more per domain, by selector)');

  const run =
    <A extends unknown[]>(cmd: Command, fn: (...args: A) => Promise<void>) =>
    async (...args: A): Promise<void> => {
      try {
        await fn(...args);
      } catch (err) {
        if (err instanceof DkimError)
          cmd.error(`error: ${err.message}`, { exitCode: 1, code: 'mailyard.dkim' });
        throw err;
      }
    };

  const generate = dkim
    .command('generate')
    .description('generate a key, store it, and print the DNS TXT record to publish')
    .argument('<domain>', 'a local domain')
    .option('-s, --selector <selector>', 'selector (default: <algo>-<yyyymm>)')
    .addOption(new Option('-a, --algo <algo>', 'key algorithm').choices(['rsa', 'ed25519']).default('rsa'))
    .option('-b, --bits <bits>', `RSA key size (${MIN_RSA_BITS}-4096)`, String(MIN_RSA_BITS));
  generate.action(
    run(generate, async (domain: string, opts: { selector?: string; algo: DkimAlgorithm; bits: string }) => {
      const bits = Number(opts.bits);
      if (!Number.isInteger(bits)) throw new DkimError(`--bits must be a whole number, got "${opts.bits}"`);
      const selector = opts.selector ?? defaultSelector(opts.algo);
      const n = DkimKeyStore.normalize(domain, selector);
      await deps.withRedis(async (redis) => {
        if (!(await deps.isLocalDomain(redis, n.domain)))
          throw new DkimError(
            `domain ${n.domain} is not a local domain (add it with: mailyard domain add ${n.domain})`,
          );
        const key = generateDkimKey(opts.algo, bits);
        const stored = await new DkimKeyStore(redis).add(n.domain, n.selector, key);
        const rec = dnsRecord(stored.domain, stored.selector, stored);
        out(
          `Stored ${stored.algorithm} key ${stored.selector} for ${stored.domain}. Publish this TXT record:\n\n` +
            `${rec.zoneLine}\n\n` +
            `Name:  ${rec.name}\nValue: ${rec.value}\n`,
        );
      });
    }),
  );

  const list = dkim
    .command('list')
    .description('list keys: domain, selector, algorithm, created')
    .argument('[domain]', 'only this domain');
  list.action(
    run(list, async (domain?: string) => {
      await deps.withRedis(async (redis) => {
        const keys = await new DkimKeyStore(redis).list(domain);
        if (!keys.length) out(domain ? `no DKIM keys for ${domain}\n` : 'no DKIM keys\n');
        for (const k of keys) out(describe(k) + '\n');
      });
    }),
  );

  const show = dkim
    .command('show')
    .description('print the DNS TXT records of a domain (or of one selector)')
    .argument('<domain>')
    .argument('[selector]');
  show.action(
    run(show, async (domain: string, selector?: string) => {
      await deps.withRedis(async (redis) => {
        const store = new DkimKeyStore(redis);
        const keys = selector
          ? [await store.get(domain, selector)].filter((k): k is StoredDkimKey => k !== null)
          : await store.list(domain);
        if (!keys.length)
          throw new DkimError(
            selector ? `no DKIM key with selector ${selector} for ${domain}` : `no DKIM keys for ${domain}`,
          );
        out(keys.map((k) => dnsRecord(k.domain, k.selector, k).zoneLine).join('\n') + '\n');
      });
    }),
  );

  const del = dkim
    .command('delete')
    .description('delete a key (remove its TXT record only after mail signed with it has been delivered)')
    .argument('<domain>')
    .argument('<selector>');
  del.action(
    run(del, async (domain: string, selector: string) => {
      await deps.withRedis(async (redis) => {
        await new DkimKeyStore(redis).remove(domain, selector);
        const n = DkimKeyStore.normalize(domain, selector);
        out(`Deleted DKIM key ${n.selector} of ${n.domain}\n`);
      });
    }),
  );

  return dkim;
}
