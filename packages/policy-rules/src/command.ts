import { InvalidArgumentError, type Command } from 'commander';
import type { Redis } from 'ioredis';
import { AccessError } from './access.js';
import {
  PolicyCommandError,
  accessDel,
  accessList,
  accessSet,
  addEntry,
  explain,
  listChecks,
  removeEntry,
  resetList,
  setList,
  showLists,
  userList,
} from './commands.js';
import { RestrictionError } from './checks.js';
import { PolicyRules } from './store.js';

/** What the command group needs from the CLI (the `mailyard` CommandContext has it all but `fail`). */
export interface PolicyCliContext {
  /** Writes one line to standard output. */
  print(line: string): void;
  /** Connects to Redis (the installation's key prefix), runs `fn`, disconnects. */
  withRedis<T>(fn: (redis: Redis) => Promise<T>): Promise<T>;
  /** The CLI's own error for a refusal: one sentence on stderr, exit status 1. */
  fail(message: string): Error;
  /** The rules the commands edit (default: PolicyRules; the `mailyard` CLI passes audited ones). */
  rules?(redis: Redis): PolicyRules;
}

/**
 * `mailyard policy ...`: restriction lists, access tables, per-user sender lists and
 * explanations of refusals. Every change is picked up live by every policy instance.
 * Lives here (not in the CLI) next to the rules; `@mailyard/policy-rules/command`
 * keeps commander out of the services that only read rules.
 */
export function registerPolicyCommands(program: Command, ctx: PolicyCliContext): void {
  const run =
    <A extends unknown[]>(fn: (rules: PolicyRules, ...args: A) => Promise<string[]> | string[]) =>
    async (...args: A): Promise<void> => {
      try {
        const lines = await ctx.withRedis((redis) =>
          Promise.resolve(
            fn(ctx.rules?.(redis) ?? new PolicyRules(redis, redis.options.keyPrefix ?? ''), ...args),
          ),
        );
        for (const line of lines) ctx.print(line);
      } catch (err) {
        if (
          err instanceof RestrictionError ||
          err instanceof AccessError ||
          err instanceof PolicyCommandError
        )
          throw ctx.fail(err.message);
        throw err;
      }
    };
  const position = (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a position 1, 2, 3...');
    return n;
  };

  const policy = program
    .command('policy')
    .description('restriction lists, access tables, sender allow/block lists, why mail was refused');
  policy
    .command('show [list]')
    .description('show the restriction lists (defaults where none was set)')
    .action(run((r, list?: string) => showLists(r, list)));
  policy
    .command('checks')
    .description('list the built-in checks')
    .action(run(() => listChecks()));
  policy
    .command('set <list> [entries...]')
    .description(
      'replace a list: policy set smtpd_helo_restrictions "permit_mynetworks, reject_invalid_helo_hostname"',
    )
    .action(run((r, list: string, words: string[]) => setList(r, list, words)));
  policy
    .command('add <list> <entry...>')
    .option('-p, --position <n>', 'insert at this position (1 is first)', position)
    .description('add a check: policy add smtpd_client_restrictions reject_rbl_client zen.example')
    .action(
      run((r, list: string, words: string[], opts: { position?: number }) =>
        addEntry(r, list, words, opts.position),
      ),
    );
  policy
    .command('remove <list> <entry...>')
    .description('remove a check from a list')
    .action(run((r, list: string, words: string[]) => removeEntry(r, list, words)));
  policy
    .command('reset <list>')
    .description('go back to the default list')
    .action(run((r, list: string) => resetList(r, list)));

  const access = policy
    .command('access')
    .description('access tables of check_client_access, check_sender_access, check_recipient_access');
  access
    .command('set <table> <key> <action...>')
    .description('e.g. policy access set client_access 192.0.2.0/24 REJECT spam source')
    .action(run((r, table: string, key: string, action: string[]) => accessSet(r, table, key, action)));
  access
    .command('del <table> <key>')
    .description('remove a key')
    .action(run((r, table: string, key: string) => accessDel(r, table, key)));
  access
    .command('list <table>')
    .description('show a table')
    .action(run((r, table: string) => accessList(r, table)));

  for (const kind of ['allow', 'block'] as const) {
    const g = policy.command(kind).description(`a user's ${kind} list of senders (addresses or domains)`);
    g.command('add <account> <sender>').action(
      run((r, account: string, sender: string) => userList(r, 'add', kind, account, sender)),
    );
    g.command('del <account> <sender>').action(
      run((r, account: string, sender: string) => userList(r, 'del', kind, account, sender)),
    );
    g.command('show <account>').action(run((r, account: string) => userList(r, 'show', kind, account)));
  }

  policy
    .command('explain <id>')
    .description('why mail was refused, deferred or held: the queue id, or the "ref" at the end of the reply')
    .action(run((r, id: string) => explain(r, id)));
}
