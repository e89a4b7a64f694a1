import type { Command } from 'commander';
import { MAX_APP_PASSWORDS } from '@mailyard/auth';
import type { CommandContext } from '../context.js';

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
      ctx.withOperations(async (ops) => {
        const { account: a, secret } = await ops.createAppPassword(account, name);
        ctx.print(`app password "${name}" for ${a} (shown only now; spaces may be left out):`);
        ctx.print(secret.replace(/(.{4})(?=.)/g, '$1 '));
      }),
    );

  group
    .command('list')
    .description('list the app passwords of an account: name<TAB>created')
    .argument('<account>', 'account address')
    .action((account: string) =>
      ctx.withOperations(async (ops) => {
        for (const p of await ops.listAppPasswords(account)) ctx.print(`${p.name}\t${p.created}`);
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
      ctx.withOperations(async (ops) => {
        const a = await ops.revokeAppPassword(account, name);
        ctx.print(`revoked app password "${name}" of ${a}`);
      }),
    );
}
