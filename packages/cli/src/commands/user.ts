import { type Command, Option } from 'commander';
import { parseQuota } from '@mailyard/admin';
import type { CommandContext } from '../context.js';
import { CliError, ExitCode, usageError } from '../errors.js';
import { obtainPassword } from '../password.js';
import { plural } from '@mailyard/smtp-core';

interface PasswordOptions {
  passwordStdin?: boolean;
  password?: string;
  admin?: boolean;
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
    .option('--admin', 'give the account the admin role (the admin console of the webmail)')
    .addOption(passwordInArgv())
    .action((address: string, opts: PasswordOptions) => {
      refusePasswordInArgv(opts);
      return ctx.withOperations(async (ops) => {
        const created = await ops.addUser(
          address,
          await password(opts, () => ops.checkAccount(address, 'absent')),
          { admin: opts.admin === true },
        );
        ctx.print(`added ${opts.admin ? 'admin ' : ''}account ${created}`);
      });
    });

  user
    .command('admin')
    .description('give an account the admin role, or take it away with --remove')
    .argument('<address>', 'account address')
    .option('--remove', 'take the admin role away')
    .action((address: string, opts: { remove?: boolean }) =>
      ctx.withOperations(async (ops) => {
        const a = await ops.setAdmin(address, opts.remove !== true);
        ctx.print(opts.remove ? `${a} is no longer an admin` : `${a} is an admin`);
      }),
    );

  user
    .command('passwd')
    .description("set an account's password")
    .argument('<address>', 'account address')
    .option('--password-stdin', passwordStdinHelp)
    .addOption(passwordInArgv())
    .action((address: string, opts: PasswordOptions) => {
      refusePasswordInArgv(opts);
      return ctx.withOperations(async (ops) => {
        const a = await ops.checkAccount(address, 'present');
        await ops.setPassword(a, await password(opts, async () => a));
        ctx.print(`changed the password of ${a}`);
      });
    });

  user
    .command('del')
    .description('delete an account (its mailbox on disk is left in place)')
    .argument('<address>', 'account address')
    .action((address: string) =>
      ctx.withOperations(async (ops) => {
        const del = await ops.delUser(address);
        ctx.print(
          del.resumed
            ? `finished the clean-up of deleted account ${del.account}`
            : `deleted account ${del.account}`,
        );
        // the account is gone (stdout says so); what is left is worth a retry, as dns check's tempfail
        if (del.warning) throw new CliError(del.warning, ExitCode.tempfail);
      }),
    );

  user
    .command('lock')
    .description(
      'lock an account: its password and app passwords log in nowhere (mail to it is still delivered)',
    )
    .argument('<address>', 'account address')
    .action((address: string) =>
      ctx.withOperations(async (ops) => {
        ctx.print(`locked account ${(await ops.lockUser(address)).account}`);
      }),
    );

  user
    .command('unlock')
    .description('unlock a locked account')
    .argument('<address>', 'account address')
    .action((address: string) =>
      ctx.withOperations(async (ops) => {
        ctx.print(`unlocked account ${await ops.unlockUser(address)}`);
      }),
    );

  user
    .command('quota')
    .description("set an account's storage quota")
    .argument('<address>', 'account address')
    .argument('<size>', 'e.g. 512M or 2G; "unlimited"; or "default" for QUOTA_STORAGE')
    .action((address: string, size: string) =>
      ctx.withOperations(async (ops) => {
        const bytes = parseQuota(size);
        const a = await ops.setQuota(address, bytes);
        ctx.print(
          bytes === null
            ? `${a} has the default quota again`
            : `quota of ${a}: ${bytes === 0 ? 'unlimited' : plural(bytes, 'byte')}`,
        );
      }),
    );

  user
    .command('reset-2fa')
    .description('turn two-factor login off for an account that lost its authenticator and recovery codes')
    .argument('<address>', 'account address')
    .action((address: string) =>
      ctx.withOperations(async (ops) => {
        ctx.print(`two-factor login is off for ${await ops.resetTwoFactor(address)}`);
      }),
    );

  user
    .command('list')
    .description('list accounts, one a line, of one domain or of all')
    .argument('[domain]', 'only the accounts of this domain')
    .action((domain: string | undefined) =>
      ctx.withOperations(async (ops) => {
        for (const a of await ops.listUsers(domain)) ctx.print(a);
      }),
    );
}
