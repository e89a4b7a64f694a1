import { Command, InvalidArgumentError } from 'commander';
import {
  PolicyRules,
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
} from '@mailyard/policy-rules';
import type { Redis } from 'ioredis';

/** What the policy commands need from the CLI: a Redis client (with the key prefix) and the prefix. */
export interface PolicyCommandContext {
  redis: () => Promise<Redis> | Redis;
  prefix: string;
  print: (line: string) => void;
}

/**
 * `mailyard policy ...`: restriction lists, access tables, per-user sender lists and
 * explanations of refusals. Every change is picked up live by every policy instance.
 */
export function policyCommand(ctx: PolicyCommandContext): Command {
  const run =
    <A extends unknown[]>(fn: (rules: PolicyRules, ...args: A) => Promise<string[]> | string[]) =>
    async (...args: A) => {
      const rules = new PolicyRules(await ctx.redis(), ctx.prefix);
      for (const line of await fn(rules, ...args)) ctx.print(line);
    };
  const position = (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a position 1, 2, 3...');
    return n;
  };

  const policy = new Command('policy').description('restrictions, access tables, sender lists, explain');
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
    .description('replace a list: mailyard policy set smtpd_client_restrictions "permit_mynetworks, reject"')
    .action(run((r, list: string, words: string[]) => setList(r, list, words)));
  policy
    .command('add <list> <entry...>')
    .option('-p, --position <n>', 'insert at this position (1 is first)', position)
    .description(
      'add a check to a list: mailyard policy add smtpd_client_restrictions reject_rbl_client zen.example',
    )
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

  const access = policy.command('access').description('access tables (check_client/sender/recipient_access)');
  access
    .command('set <table> <key> <action...>')
    .description('e.g. access set client_access 192.0.2.0/24 REJECT spam source')
    .action(run((r, table: string, key: string, action: string[]) => accessSet(r, table, key, action)));
  access
    .command('del <table> <key>')
    .action(run((r, table: string, key: string) => accessDel(r, table, key)));
  access.command('list <table>').action(run((r, table: string) => accessList(r, table)));

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
    .description('why mail was refused, deferred or held: the queue id or the (ref ...) of the reply')
    .action(run((r, id: string) => explain(r, id)));
  return policy;
}
