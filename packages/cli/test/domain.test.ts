import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cliHarness } from './harness.js';

test('domain add, list and del', async (t) => {
  const cli = cliHarness(t);
  assert.equal(await cli.ok(['domain', 'add', 'Example.ORG']), 'added domain example.org\n');
  await cli.ok(['domain', 'add', 'bücher.example']);
  await cli.ok(['domain', 'add', 'a.test']);
  assert.equal(await cli.ok(['domain', 'list']), 'a.test\nexample.org\nxn--bcher-kva.example\n');
  assert.equal(await cli.ok(['domain', 'del', 'EXAMPLE.org']), 'deleted domain example.org\n');
  assert.equal(await cli.ok(['domain', 'del', 'bücher.example']), 'deleted domain xn--bcher-kva.example\n');
  assert.deepEqual(await cli.directory.listDomains(), ['a.test']);
});

test('domain list with no domains prints nothing', async (t) => {
  const cli = cliHarness(t);
  assert.deepEqual(await cli.run(['domain', 'list']), { code: 0, stdout: '', stderr: '' });
});

test('domain add of an existing domain fails and changes nothing', async (t) => {
  const cli = cliHarness(t);
  await cli.ok(['domain', 'add', 'example.org']);
  assert.deepEqual(await cli.run(['domain', 'add', 'EXAMPLE.ORG']), {
    code: 1,
    stdout: '',
    stderr: 'mailyard: domain example.org already exists\n',
  });
  assert.deepEqual(await cli.directory.listDomains(), ['example.org']);
});

for (const bad of ['exa mple.org', 'example..org', '*.example.org', 'user@example.org']) {
  test(`domain add refuses the invalid name ${JSON.stringify(bad)}`, async (t) => {
    const cli = cliHarness(t);
    const r = await cli.run(['domain', 'add', bad]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `mailyard: "${bad}" is not a valid domain name\n`);
    assert.deepEqual(await cli.directory.listDomains(), []);
  });
}

test('a name that looks like an option is a usage error unless after --', async (t) => {
  const cli = cliHarness(t);
  const r = await cli.run(['domain', 'add', '-example.org']);
  assert.equal(r.code, 2);
  assert.equal(r.stderr, "mailyard: unknown option '-example.org'\n");
  const r2 = await cli.run(['domain', 'add', '--', '-example.org']);
  assert.equal(r2.code, 1);
  assert.equal(r2.stderr, 'mailyard: "-example.org" is not a valid domain name\n');
});

test('domain del of an unknown domain fails', async (t) => {
  const cli = cliHarness(t);
  const r = await cli.run(['domain', 'del', 'nope.test']);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'mailyard: domain nope.test does not exist\n');
});

test('domain del refuses a domain that still has accounts or aliases', async (t) => {
  const cli = cliHarness(t);
  await cli.ok(['domain', 'add', 'example.org']);
  await cli.ok(['user', 'add', 'alice@example.org', '--password-stdin'], { input: 'a long enough secret\n' });
  const r = await cli.run(['domain', 'del', 'example.org']);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^mailyard: domain example\.org still has 1 account and 0 aliases; delete them first\n$/,
  );
  assert.deepEqual(await cli.directory.listDomains(), ['example.org']);
  await cli.ok(['user', 'del', 'alice@example.org']);
  await cli.ok(['domain', 'del', 'example.org']);
  assert.deepEqual(await cli.directory.listDomains(), []);
});
