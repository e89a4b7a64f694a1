import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { createTestRedis } from '@mailyard/testkit';
import { policyCommand } from '../src/commands/policy.js';

const r = createTestRedis();
after(() => r.cleanup());

async function cli(...args: string[]): Promise<string[]> {
  const out: string[] = [];
  const cmd = policyCommand({ redis: () => r.redis, prefix: r.prefix, print: (l) => out.push(l) });
  cmd.exitOverride();
  await cmd.parseAsync(args, { from: 'user' });
  return out;
}

test('mailyard policy: set, add, show, access tables, allow lists', async () => {
  assert.deepEqual(
    await cli('set', 'smtpd_client_restrictions', 'permit_mynetworks,', 'reject_rbl_client', 'zen.example'),
    ['smtpd_client_restrictions = permit_mynetworks, reject_rbl_client zen.example'],
  );
  await cli('add', 'smtpd_client_restrictions', '--position', '2', 'check_client_access', 'client_access');
  assert.deepEqual(await cli('show', 'smtpd_client_restrictions'), [
    'smtpd_client_restrictions =',
    '    permit_mynetworks',
    '    check_client_access client_access',
    '    reject_rbl_client zen.example',
  ]);
  assert.deepEqual(await cli('access', 'set', 'client_access', '192.0.2.9/24', 'REJECT', 'spam', 'source'), [
    'client_access: 192.0.2.0/24 REJECT spam source',
  ]);
  assert.deepEqual(await cli('access', 'list', 'client_access'), ['192.0.2.0/24\tREJECT spam source']);
  assert.deepEqual(await cli('allow', 'add', 'alice@example.test', 'Friend.example'), [
    'alice@example.test allow: friend.example',
  ]);
  await assert.rejects(
    cli('add', 'smtpd_client_restrictions', 'reject_all_the_things'),
    /unknown restriction/,
  );
  await assert.rejects(cli('explain', 'NOPE1234'), /nothing recorded for NOPE1234/);
});
