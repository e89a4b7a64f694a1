import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cliHarness } from './harness.js';

test('dkim generate, list, show and delete through mailyard', async (t) => {
  const cli = cliHarness(t);
  assert.deepEqual(await cli.run(['dkim', 'generate', 'example.org']), {
    code: 1,
    stdout: '',
    stderr:
      'mailyard: domain example.org is not a local domain (add it with: mailyard domain add example.org)\n',
  });
  await cli.ok(['domain', 'add', 'example.org']);
  const out = await cli.ok(['dkim', 'generate', 'example.org', '--algo', 'ed25519', '--selector', 'ed1']);
  assert.match(out, /^stored ed25519 key ed1 for example\.org; publish this TXT record:\n/);
  assert.match(
    out,
    /^ed1\._domainkey\.example\.org\. IN TXT \( "v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=" \)$/m,
  );
  await cli.ok(['dkim', 'generate', 'example.org', '-s', 'rsa1']);
  assert.match(
    await cli.ok(['dkim', 'list']),
    /^example\.org\ted1\ted25519\t\S+\nexample\.org\trsa1\trsa\t\S+\n$/,
  );
  assert.equal((await cli.ok(['dkim', 'show', 'example.org'])).split('\n').filter(Boolean).length, 2);
  assert.deepEqual(await cli.run(['dkim', 'generate', 'example.org', '-s', 'ed1']), {
    code: 1,
    stdout: '',
    stderr: 'mailyard: selector ed1 already exists for example.org; choose another one or delete it first\n',
  });
  assert.equal((await cli.run(['dkim', 'generate', 'example.org', '--algo', 'dsa'])).code, 2);
  assert.equal(
    await cli.ok(['dkim', 'delete', 'example.org', 'ed1']),
    'deleted DKIM key ed1 of example.org\n',
  );
  assert.equal((await cli.run(['dkim', 'delete', 'example.org', 'ed1'])).code, 1);
});
