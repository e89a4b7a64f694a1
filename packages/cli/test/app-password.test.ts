import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { AppPasswords } from '@mailyard/auth';
import { REDIS_URL } from '@mailyard/testkit';
import { GOOD_PASSWORD, cliHarness } from './harness.js';

test('app-password create, list and revoke', async (t) => {
  const cli = cliHarness(t);
  await cli.ok(['domain', 'add', 'example.org']);
  await cli.directory.addUser('alice@example.org', GOOD_PASSWORD);
  const out = await cli.ok(['app-password', 'create', 'Alice@example.org', 'phone']);
  const [first, secret] = out.split('\n');
  assert.equal(first, 'app password "phone" for alice@example.org (shown only now; spaces may be left out):');
  assert.match(secret!, /^[a-z2-9]{4}( [a-z2-9]{4}){4}$/);
  const redis = new Redis(REDIS_URL, { keyPrefix: cli.prefix });
  t.after(() => redis.disconnect());
  assert.equal(await new AppPasswords(redis).verify('alice@example.org', secret!), 'phone');
  assert.match(
    await cli.ok(['app-password', 'list', 'alice@example.org']),
    /^phone\t\d{4}-\d\d-\d\dT[^\n]+\n$/,
  );
  assert.deepEqual(await cli.run(['app-password', 'create', 'alice@example.org', 'phone']), {
    code: 1,
    stdout: '',
    stderr: 'mailyard: app password "phone" already exists for alice@example.org\n',
  });
  assert.equal(
    await cli.ok(['app-password', 'revoke', 'alice@example.org', 'phone']),
    'revoked app password "phone" of alice@example.org\n',
  );
  assert.equal(await new AppPasswords(redis).verify('alice@example.org', secret!), null);
  assert.deepEqual(await cli.run(['app-password', 'revoke', 'alice@example.org', 'phone']), {
    code: 1,
    stdout: '',
    stderr: 'mailyard: no app password "phone" for alice@example.org\n',
  });
  assert.deepEqual(await cli.run(['app-password', 'list', 'bob@example.org']), {
    code: 1,
    stdout: '',
    stderr: 'mailyard: account bob@example.org does not exist\n',
  });
  assert.equal((await cli.run(['app-password', 'create', 'alice@example.org', 'bad/name'])).code, 1);
});
