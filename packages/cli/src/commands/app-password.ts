import type { Command } from 'commander';
import { AppPasswords, MAX_APP_PASSWORDS } from '@mailyard/auth';
import { Directory } from '@mailyard/directory';
import { checkAccount } from '../addresses.js';
import type { CommandContext } from '../context.js';
import { CliError } from '../errors.js';

// AppPasswords reports what the operator can fix (bad name, duplicate, limit, unknown
// name) as plain Errors; anything else (a Redis failure) keeps its own class.
async function refusals<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof Error && err.constructor === Error) throw new CliError(err.message);
    throw err;
  }
}

export function registerAppPasswordCommands(program: Command, ctx: CommandContext): void {
  const group = program
    .command('app-password')
    .description(
      'per-client passwords (one per phone, laptop...) that log in to SMTP submission, IMAP and POP3',
    );

  group
    .command('create')
    .description(`create an app password and print it, once (at most ${MAX_APP_PASSWORDS} per account)`)
    .argument('<account>', 'account address')
    .argument('<name>', 'what it is for, e.g. "phone" (letters, digits, spaces, ._@-)')
    .action((account: string, name: string) =>
      ctx.withRedis(async (redis) => {
        const a = await checkAccount(new Directory(redis), account, 'present');
        const secret = await refusals(() => new AppPasswords(redis).create(a, name));
        ctx.print(`app password "${name}" for ${a} (shown only now; spaces may be left out):`);
        ctx.print(secret.replace(/(.{4})(?=.)/g, '$1 '));
      }),
    );

  group
    .command('list')
    .description('list the app passwords of an account: name<TAB>created')
    .argument('<account>', 'account address')
    .action((account: string) =>
      ctx.withRedis(async (redis) => {
        const a = await checkAccount(new Directory(redis), account, 'present');
        for (const p of await new AppPasswords(redis).list(a)) ctx.print(`${p.name}\t${p.created}`);
      }),
    );

  group
    .command('revoke')
    .description(
      'revoke an app password: the client using it can no longer log in, and its open sessions end',
    )
    .argument('<account>', 'account address')
    .argument('<name>', 'the name given at create')
    .action((account: string, name: string) =>
      ctx.withRedis(async (redis) => {
        const a = await checkAccount(new Directory(redis), account, 'present');
        await refusals(() => new AppPasswords(redis).revoke(a, name));
        ctx.print(`revoked app password "${name}" of ${a}`);
      }),
    );
}
