/**
 * clamd and rspamd for the Postfix side of `bench/postfix-compare.sh -p`, configured as
 * the tests and `bench:inbound --policy` start them (packages/testkit), rspamd with its
 * proxy worker as a milter. Prints `CLAMD_TCP=host:port` and `RSPAMD_MILTER=inet:...`
 * once both answer, then runs until stdin closes or SIGTERM.
 *
 *   node --conditions=development --import tsx bench/postfix-scanners.ts DNS_HOST:PORT
 */
import { startClamd, startRspamd, type Scanner } from '@mailyard/testkit';

async function main(): Promise<void> {
  const dns = process.argv[2];
  if (!dns) throw new Error('usage: postfix-scanners.ts DNS_HOST:PORT');
  const scanners: Scanner[] = [];
  const stop = async () => {
    await Promise.all(scanners.map((s) => s.stop()));
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.stdin.once('end', () => void stop());
  process.stdin.resume();
  const started = await Promise.allSettled([startClamd(), startRspamd(dns, {}, { milter: true })]);
  for (const s of started) if (s.status === 'fulfilled') scanners.push(s.value);
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) {
    await Promise.all(scanners.map((s) => s.stop()));
    throw failed.reason;
  }
  const [clamd, rspamd] = scanners as [Scanner, Scanner];
  process.stdout.write(`CLAMD_TCP=${clamd.url.replace(/^tcp:\/\//, '')}\nRSPAMD_MILTER=${rspamd.milter}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`postfix-scanners: ${(err as Error).message}\n`);
  process.exit(1);
});
