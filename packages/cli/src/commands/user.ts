import { type Command, Option } from 'commander';
import { checkAccount, requireLocalDomain } from '../addresses.js';
import type { CommandContext } from '../context.js';
import { usageError } from '../errors.js';
import { obtainPassword } from '../password.js';

interface PasswordOptions {
  passwordStdin?: boolean;
  password?: string;
}

const passwordStdinHelp = 'read the password from standard input (one line) instead of prompting';

/**
 * `--password VALUE` is declared only to refuse it without echoing the value (an
 * unknown option would be quoted back): a password in argv is visible in `ps` and
 * shell history.
 */
const passwordInArgv = () => new Option('--password <password>').hideHelp();

function refusePasswordInArgv(opts: PasswordOptions): void {
  if (opts.password !== undefined)
    throw usageError('passwords are not accepted on the command line; use --password-stdin or the prompt');
}

export function registerUserCommands(program: Command, ctx: CommandContext): void {
  const user = program.command('user').description('manage mail accounts');

  const password = (opts: PasswordOptions, beforePrompt: () => Promise<string>) =>
    obtainPassword(ctx.deps.stdin, ctx.deps.stderr, { fromStdin: opts.passwordStdin === true, beforePrompt });

  user
    .command('add')
    .description('create an account; its domain must be local')
    .argument('<address>', 'account address, e.g. alice@example.org')
    .option('--password-stdin', passwordStdinHelp)
    .addOption(passwordInArgv())
    .action((address: string, opts: PasswordOptions) => {
      refusePasswordInArgv(opts);
      return ctx.withDirectory(async (dir) => {
        const created = await dir.addUser(
          address,
          await password(opts, () => checkAccount(dir, address, 'absent')),
        );
        ctx.print(`added account ${created}`);
      });
    });

  user
    .command('passwd')
    .description("set an account's password")
    .argument('<address>', 'account address')
    .option('--password-stdin', passwordStdinHelp)
    .addOption(passwordInArgv())
    .action((address: string, opts: PasswordOptions) => {
      refusePasswordInArgv(opts);
      return ctx.withDirectory(async (dir) => {
        const a = await checkAccount(dir, address, 'present');
        await dir.setPassword(a, await password(opts, async () => a));
        ctx.print(`changed the password of ${a}`);
      });
    });

  user
    .command('del')
    .description('delete an account (its mailbox on disk is left in place)')
    .argument('<address>', 'account address')
    .action((address: string) =>
      ctx.withDirectory(async (dir) => {
        const a = await checkAccount(dir, address, 'present');
        await dir.delUser(a);
        ctx.print(`deleted account ${a}`);
      }),
    );

  user
    .command('list')
    .description('list accounts, one a line, of one domain or of all')
    .argument('[domain]', 'only the accounts of this domain')
    .action((domain: string | undefined) =>
      ctx.withDirectory(async (dir) => {
        const d = domain === undefined ? undefined : await requireLocalDomain(dir, domain);
        for (const a of await dir.listUsers(d)) ctx.print(a);
      }),
    );
}
