import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Command } from 'commander';
import { registerPolicyCommands } from '@mailyard/policy-rules/command';
import { createTestRedis } from '@mailyard/testkit';

const r = createTestRedis();
after(() => r.cleanup());

class Refusal extends Error {}

/** The group on a bare commander program, as the mailyard CLI registers it. */
async function cli(...args: string[]): Promise<string[]> {
  const out: string[] = [];
  const program = new Command('mailyard').exitOverride();
  registerPolicyCommands(program, {
    print: (l) => out.push(l),
    withRedis: (fn) => fn(r.redis),
    fail: (m) => new Refusal(m),
  });
  await program.parseAsync(args, { from: 'user' });
  return out;
}

test('mailyard policy: set, add, show, access tables, allow lists, refusals', async () => {
  assert.deepEqual(
    await cli(
      'policy',
      'set',
      'smtpd_client_restrictions',
      'permit_mynetworks,',
      'reject_rbl_client',
      'zen.example',
    ),
    ['smtpd_client_restrictions = permit_mynetworks, reject_rbl_client zen.example'],
  );
  await cli(
    'policy',
    'add',
    'smtpd_client_restrictions',
    '--position',
    '2',
    'check_client_access',
    'client_access',
  );
  assert.deepEqual(await cli('policy', 'show', 'smtpd_client_restrictions'), [
    'smtpd_client_restrictions =',
    '    permit_mynetworks',
    '    check_client_access client_access',
    '    reject_rbl_client zen.example',
  ]);
  assert.deepEqual(
    await cli('policy', 'access', 'set', 'client_access', '192.0.2.9/24', 'REJECT', 'spam', 'source'),
    ['client_access: 192.0.2.0/24 REJECT spam source'],
  );
  assert.deepEqual(await cli('policy', 'access', 'list', 'client_access'), [
    '192.0.2.0/24\tREJECT spam source',
  ]);
  // removed as written, said as stored (as set says it)
  assert.deepEqual(await cli('policy', 'access', 'set', 'client_access', '192.0.2.77', 'OK'), [
    'client_access: 192.0.2.77/32 OK',
  ]);
  assert.deepEqual(await cli('policy', 'access', 'del', 'client_access', '192.0.2.77'), [
    'client_access: 192.0.2.77/32 removed',
  ]);
  assert.deepEqual(await cli('policy', 'allow', 'add', 'alice@example.test', 'Friend.example'), [
    'alice@example.test allow: friend.example',
  ]);
  await assert.rejects(
    cli('policy', 'add', 'smtpd_client_restrictions', 'reject_all_the_things'),
    (e) => e instanceof Refusal && /unknown restriction "reject_all_the_things"/.test(e.message),
  );
  await assert.rejects(
    cli('policy', 'explain', 'NOPE1234'),
    (e) => e instanceof Refusal && /nothing recorded for NOPE1234/.test(e.message),
  );
  await assert.rejects(cli('policy', 'access', 'set', 'client_access', '10.0.0.1', 'MAYBE'), Refusal);
});
