import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GOOD_PASSWORD, cliHarness } from './harness.js';

async function setup(t: Parameters<typeof cliHarness>[0]) {
  const cli = cliHarness(t);
  await cli.ok(['domain', 'add', 'example.org']);
  await cli.ok(['domain', 'add', 'b.test']);
  await cli.ok(['user', 'add', 'alice@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  return cli;
}

test('alias add with several targets, local and external, and resolution through it', async (t) => {
  const cli = await setup(t);
  const out = await cli.ok([
    'alias',
    'add',
    'Postmaster@Example.org',
    'alice@example.org',
    'Ops@Elsewhere.TEST',
  ]);
  assert.equal(out, 'added alias postmaster@example.org -> alice@example.org, ops@elsewhere.test\n');
  assert.deepEqual(await cli.directory.expand('postmaster@example.org'), {
    local: [{ account: 'alice@example.org', via: 'postmaster@example.org' }],
    remote: ['ops@elsewhere.test'],
  });
});

test('alias add to an existing alias adds targets', async (t) => {
  const cli = await setup(t);
  await cli.ok(['alias', 'add', 'team@example.org', 'alice@example.org']);
  await cli.ok(['alias', 'add', 'team@example.org', 'bob@elsewhere.test']);
  assert.equal(await cli.ok(['alias', 'list']), 'team@example.org\talice@example.org, bob@elsewhere.test\n');
});

test('alias add names a target given twice once, and audits it once', async (t) => {
  const cli = await setup(t);
  assert.equal(
    await cli.ok(['alias', 'add', 'team@example.org', 'alice@example.org', 'Alice@Example.ORG']),
    'added alias team@example.org -> alice@example.org\n',
  );
  const [last] = (await cli.ok(['audit', '-n', '1'])).trim().split('\n');
  assert.match(last!, /\talias\.add\tteam@example\.org\ttargets=alice@example\.org$/);
});

test('alias add @domain makes the catch-all', async (t) => {
  const cli = await setup(t);
  assert.equal(
    await cli.ok(['alias', 'add', '@Example.ORG', 'alice@example.org']),
    'added alias @example.org -> alice@example.org\n',
  );
  assert.deepEqual(await cli.directory.resolve('anything@example.org'), {
    kind: 'catchall',
    source: '@example.org',
    targets: ['alice@example.org'],
  });
  assert.equal(await cli.directory.resolve('anything@b.test'), null);
});

test('alias list shows all aliases, or one domain’s', async (t) => {
  const cli = await setup(t);
  await cli.ok(['alias', 'add', 'sales@example.org', 'alice@example.org']);
  await cli.ok(['alias', 'add', '@b.test', 'alice@example.org']);
  await cli.ok(['alias', 'add', 'info@b.test', 'x@elsewhere.test', 'alice@example.org']);
  assert.equal(
    await cli.ok(['alias', 'list']),
    '@b.test\talice@example.org\ninfo@b.test\talice@example.org, x@elsewhere.test\nsales@example.org\talice@example.org\n',
  );
  assert.equal(await cli.ok(['alias', 'list', 'EXAMPLE.org']), 'sales@example.org\talice@example.org\n');
  assert.equal(await cli.ok(['alias', 'list', 'example.org']), 'sales@example.org\talice@example.org\n');
  const r = await cli.run(['alias', 'list', 'other.test']);
  assert.deepEqual(r, {
    code: 1,
    stdout: '',
    stderr:
      'mailyard: domain other.test is not a local domain (add it with: mailyard domain add other.test)\n',
  });
});

test('alias del with a target removes that target; the last one takes the alias with it', async (t) => {
  const cli = await setup(t);
  await cli.ok(['alias', 'add', 'team@example.org', 'alice@example.org', 'bob@elsewhere.test']);
  assert.equal(
    await cli.ok(['alias', 'del', 'TEAM@example.org', 'Bob@Elsewhere.test']),
    'removed bob@elsewhere.test from alias team@example.org\n',
  );
  assert.equal(await cli.ok(['alias', 'list']), 'team@example.org\talice@example.org\n');
  await cli.ok(['alias', 'del', 'team@example.org', 'alice@example.org']);
  assert.equal(await cli.ok(['alias', 'list']), '');
  assert.equal(await cli.directory.resolve('team@example.org'), null);
});

test('alias del without a target removes the whole alias, catch-all included', async (t) => {
  const cli = await setup(t);
  await cli.ok(['alias', 'add', 'team@example.org', 'alice@example.org', 'bob@elsewhere.test']);
  await cli.ok(['alias', 'add', '@example.org', 'alice@example.org']);
  assert.equal(await cli.ok(['alias', 'del', 'team@example.org']), 'deleted alias team@example.org\n');
  assert.equal(await cli.ok(['alias', 'del', '@EXAMPLE.org']), 'deleted alias @example.org\n');
  assert.equal(await cli.ok(['alias', 'list']), '');
  // the domain is free again once its aliases and accounts are gone
  await cli.ok(['user', 'del', 'alice@example.org']);
  await cli.ok(['domain', 'del', 'example.org']);
});

test('alias del of an unknown alias or target fails and changes nothing', async (t) => {
  const cli = await setup(t);
  await cli.ok(['alias', 'add', 'team@example.org', 'alice@example.org']);
  const cases = [
    [['nobody@example.org'], 'alias nobody@example.org does not exist'],
    [['@b.test'], 'alias @b.test does not exist'],
    [['team@example.org', 'carol@example.org'], 'alias team@example.org has no target carol@example.org'],
    [['team@'], '"team@" is not a valid address'],
    [['@bad..domain'], '"@bad..domain" is not a valid catch-all (use @domain)'],
    [['team@example.org', 'carol'], '"carol" is not a valid address'],
  ] as const;
  for (const [args, message] of cases) {
    const r = await cli.run(['alias', 'del', ...args]);
    assert.deepEqual(r, { code: 1, stdout: '', stderr: `mailyard: ${message}\n` }, args.join(' '));
  }
  assert.equal(await cli.ok(['alias', 'list']), 'team@example.org\talice@example.org\n');
});

test('alias add refuses unknown domains and invalid addresses', async (t) => {
  const cli = await setup(t);
  const cases = [
    [
      ['team@other.test', 'alice@example.org'],
      'domain other.test is not a local domain (add it with: mailyard domain add other.test)',
    ],
    [['@other.test', 'alice@example.org'], 'domain other.test is not a local domain'],
    [['@', 'alice@example.org'], '"@" is not a valid catch-all (use @domain)'],
    [['team', 'alice@example.org'], '"team" is not a valid address'],
    [['team@example.org', 'alice@example.org', 'not an address'], '"not an address" is not a valid address'],
    [['team@example.org', 'x%y@example.org'], '"x%y@example.org" is not a valid address'],
  ] as const;
  for (const [args, message] of cases) {
    const r = await cli.run(['alias', 'add', ...args]);
    assert.deepEqual(r, { code: 1, stdout: '', stderr: `mailyard: ${message}\n` }, args.join(' '));
  }
  assert.equal(await cli.ok(['alias', 'list']), '');
});

test('alias add without a target is a usage error', async (t) => {
  const cli = await setup(t);
  const r = await cli.run(['alias', 'add', 'team@example.org']);
  assert.equal(r.code, 2);
  assert.equal(r.stderr, "mailyard: missing required argument 'target'\n");
  assert.equal(await cli.ok(['alias', 'list']), '');
});
