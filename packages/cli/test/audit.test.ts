import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AuditLog } from '@mailyard/admin';
import { GOOD_PASSWORD, cliHarness } from './harness.js';

test('every change is in the audit log with who made it; reads are not', async (t) => {
  const cli = cliHarness(t);
  const env = { USER: 'operator' };
  const run = (argv: string[], input?: string) =>
    cli.ok(argv, {
      env: { ...env, REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', REDIS_PREFIX: cli.prefix },
      ...(input !== undefined ? { input } : {}),
    });
  await run(['domain', 'add', 'example.org', '--no-dkim']);
  await run(['user', 'add', 'alice@example.org', '--admin', '--password-stdin'], GOOD_PASSWORD);
  await run(['alias', 'add', 'info@example.org', 'alice@example.org']);
  await run(['domain', 'list']);
  await run(['app-password', 'create', 'alice@example.org', 'phone']);
  await run(['user', 'admin', 'alice@example.org', '--remove']);
  const lines = (await run(['audit'])).trim().split('\n');
  assert.deepEqual(
    lines.map((l) => l.split('\t').slice(1).join(' ')),
    [
      'cli:operator account.admin.revoke alice@example.org',
      'cli:operator app-password.create alice@example.org name=phone',
      'cli:operator alias.add info@example.org targets=alice@example.org',
      'cli:operator account.add alice@example.org admin=true',
      'cli:operator domain.add example.org',
    ],
  );
  assert.match(lines[0]!, /^\d{4}-\d\d-\d\dT\S+Z\t/);
  assert.equal((await run(['audit', '-n', '2'])).trim().split('\n').length, 2);
  assert.equal((await cli.run(['audit', '-n', '0'])).code, 2);
  // no secret in the log
  assert.doesNotMatch(lines.join('\n'), new RegExp(GOOD_PASSWORD));
});

test('a line break or tab stored in an entry is shown escaped, never as a line of its own', async (t) => {
  const cli = cliHarness(t);
  // as an entry written before its action was checked might hold
  const forged = 'REJECT no\n2026-01-01T00:00:00.000Z\tcli:root\taccount.add\tmallory@example.org';
  await new AuditLog(cli.redis).record({
    actor: 'cli:operator',
    action: 'policy.access.set',
    target: '192.0.2.1\u2028x',
    detail: { action: forged },
  });
  const out = (await cli.ok(['audit'])).trimEnd();
  assert.equal(out.split('\n').length, 1, out);
  assert.deepEqual(out.split('\t').slice(1), [
    'cli:operator',
    'policy.access.set',
    '192.0.2.1\\u2028x',
    'action=REJECT no\\n2026-01-01T00:00:00.000Z\\tcli:root\\taccount.add\\tmallory@example.org',
  ]);
});
