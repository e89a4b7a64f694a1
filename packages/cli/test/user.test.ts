import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { REDIS_URL, waitFor } from '@mailyard/testkit';
import { GOOD_PASSWORD, cliHarness } from './harness.js';

const NEW_PASSWORD = 'another fine passphrase';

async function withDomain(t: Parameters<typeof cliHarness>[0]) {
  const cli = cliHarness(t);
  await cli.ok(['domain', 'add', 'example.org']);
  return cli;
}

test('user add with --password-stdin creates an account that authenticates', async (t) => {
  const cli = await withDomain(t);
  const r = await cli.run(['user', 'add', 'Alice@Example.ORG', '--password-stdin'], {
    input: `${GOOD_PASSWORD}\n`,
  });
  assert.deepEqual(r, { code: 0, stdout: 'added account alice@example.org\n', stderr: '' });
  assert.equal(await cli.directory.authenticate('alice@example.org', GOOD_PASSWORD), 'alice@example.org');
  assert.equal(await cli.directory.authenticate('alice@example.org', `${GOOD_PASSWORD}\n`), null);
});

test('--password-stdin takes the input as it is, without a line ending or with CRLF', async (t) => {
  const cli = await withDomain(t);
  await cli.ok(['user', 'add', 'a@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  await cli.ok(['user', 'add', 'b@example.org', '--password-stdin'], { input: `${GOOD_PASSWORD}\r\n` });
  assert.ok(await cli.directory.authenticate('a@example.org', GOOD_PASSWORD));
  assert.ok(await cli.directory.authenticate('b@example.org', GOOD_PASSWORD));
});

test('user add of an existing account fails and keeps its password', async (t) => {
  const cli = await withDomain(t);
  await cli.ok(['user', 'add', 'alice@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  const r = await cli.run(['user', 'add', 'ALICE@example.org', '--password-stdin'], { input: NEW_PASSWORD });
  assert.deepEqual(r, {
    code: 1,
    stdout: '',
    stderr: 'mailyard: account alice@example.org already exists\n',
  });
  assert.ok(await cli.directory.authenticate('alice@example.org', GOOD_PASSWORD));
});

test('user add in a domain that is not local fails, naming the domain', async (t) => {
  const cli = await withDomain(t);
  const r = await cli.run(['user', 'add', 'bob@other.test', '--password-stdin'], { input: GOOD_PASSWORD });
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr,
    'mailyard: domain other.test is not a local domain (add it with: mailyard domain add other.test)\n',
  );
  assert.deepEqual(await cli.directory.listUsers(), []);
});

for (const bad of ['alice', 'alice@', '@example.org', 'a b@example.org', 'user%other.test@example.org']) {
  test(`user add refuses the invalid address ${JSON.stringify(bad)}`, async (t) => {
    const cli = await withDomain(t);
    const r = await cli.run(['user', 'add', bad, '--password-stdin'], { input: GOOD_PASSWORD });
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `mailyard: "${bad}" is not a valid address\n`);
    assert.deepEqual(await cli.directory.listUsers(), []);
  });
}

for (const [password, why] of [
  ['', 'password is empty'],
  ['\n', 'password is empty'],
  ['short1', 'password is too short (at least 10 characters)'],
  ['password123', 'password is a commonly used one'],
  ['aaaaaaaaaaaa', 'password repeats too few characters'],
  ['alice-is-the-best', 'password contains the account name'],
] as const) {
  test(`user add refuses a weak password: ${why} (${JSON.stringify(password)})`, async (t) => {
    const cli = await withDomain(t);
    const r = await cli.run(['user', 'add', 'alice@example.org', '--password-stdin'], { input: password });
    assert.deepEqual(r, { code: 1, stdout: '', stderr: `mailyard: ${why}\n` });
    assert.deepEqual(await cli.directory.listUsers(), []);
  });
}

test('a password of several lines on stdin is refused, not cut', async (t) => {
  const cli = await withDomain(t);
  const r = await cli.run(['user', 'add', 'alice@example.org', '--password-stdin'], {
    input: `${GOOD_PASSWORD}\nsecond line\n`,
  });
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'mailyard: the password on standard input must be a single line\n');
  assert.doesNotMatch(r.stderr, /second line|horse/);
  assert.deepEqual(await cli.directory.listUsers(), []);
});

test('without --password-stdin and without a terminal, user add is a usage error', async (t) => {
  const cli = await withDomain(t);
  const r = await cli.run(['user', 'add', 'alice@example.org'], { input: GOOD_PASSWORD });
  assert.equal(r.code, 2);
  assert.equal(
    r.stderr,
    'mailyard: no password given: pipe it with --password-stdin or run on a terminal to be prompted\n',
  );
  assert.deepEqual(await cli.directory.listUsers(), []);
});

test('a password on the command line is refused without being echoed', async (t) => {
  const cli = await withDomain(t);
  for (const argv of [
    ['user', 'add', 'alice@example.org', '--password', 'Sup3rSecretValue'],
    ['user', 'add', 'alice@example.org', '--password=Sup3rSecretValue'],
    ['user', 'passwd', 'alice@example.org', '--password', 'Sup3rSecretValue'],
    ['user', 'add', 'alice@example.org', '--pass=Sup3rSecretValue'],
    ['domain', 'list', '--password=Sup3rSecretValue'],
  ]) {
    const r = await cli.run(argv);
    assert.equal(r.code, 2, argv.join(' '));
    assert.doesNotMatch(r.stdout + r.stderr, /Sup3rSecretValue/, argv.join(' '));
    assert.match(r.stderr, /^mailyard: [^\n]+\n$/, argv.join(' '));
  }
  assert.deepEqual(await cli.directory.listUsers(), []);
});

test('user passwd replaces the password', async (t) => {
  const cli = await withDomain(t);
  await cli.ok(['user', 'add', 'alice@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  const r = await cli.run(['user', 'passwd', 'ALICE@example.org', '--password-stdin'], {
    input: NEW_PASSWORD,
  });
  assert.deepEqual(r, { code: 0, stdout: 'changed the password of alice@example.org\n', stderr: '' });
  assert.equal(await cli.directory.authenticate('alice@example.org', GOOD_PASSWORD), null);
  assert.ok(await cli.directory.authenticate('alice@example.org', NEW_PASSWORD));
});

test('user passwd refuses a weak password and keeps the old one', async (t) => {
  const cli = await withDomain(t);
  await cli.ok(['user', 'add', 'alice@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  const r = await cli.run(['user', 'passwd', 'alice@example.org', '--password-stdin'], { input: 'short' });
  assert.deepEqual(r, {
    code: 1,
    stdout: '',
    stderr: 'mailyard: password is too short (at least 10 characters)\n',
  });
  assert.ok(await cli.directory.authenticate('alice@example.org', GOOD_PASSWORD));
});

test('user passwd of an unknown account, in an unknown domain, or of an invalid address fails', async (t) => {
  const cli = await withDomain(t);
  const cases = [
    ['bob@example.org', 'account bob@example.org does not exist'],
    [
      'bob@other.test',
      'domain other.test is not a local domain (add it with: mailyard domain add other.test)',
    ],
    ['bob', '"bob" is not a valid address'],
  ] as const;
  for (const [address, message] of cases) {
    const r = await cli.run(['user', 'passwd', address, '--password-stdin'], { input: NEW_PASSWORD });
    assert.deepEqual(r, { code: 1, stdout: '', stderr: `mailyard: ${message}\n` });
  }
});

test('user del removes the account; deleting it again fails', async (t) => {
  const cli = await withDomain(t);
  await cli.ok(['user', 'add', 'alice@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  assert.equal(await cli.ok(['user', 'del', 'Alice@example.org']), 'deleted account alice@example.org\n');
  assert.equal(await cli.directory.accountExists('alice@example.org'), false);
  assert.equal(await cli.directory.authenticate('alice@example.org', GOOD_PASSWORD), null);
  const r = await cli.run(['user', 'del', 'alice@example.org']);
  assert.deepEqual(r, {
    code: 1,
    stdout: '',
    stderr: 'mailyard: account alice@example.org does not exist\n',
  });
  const bad = await cli.run(['user', 'del', 'not-an-address']);
  assert.deepEqual(bad, {
    code: 1,
    stdout: '',
    stderr: 'mailyard: "not-an-address" is not a valid address\n',
  });
});

test('user del whose clean-up fails still says the account is gone; again, it finishes', async (t) => {
  const cli = await withDomain(t);
  const redis = new Redis(REDIS_URL, { keyPrefix: cli.prefix });
  t.after(() => redis.quit());
  await cli.ok(['user', 'add', 'carol@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  await redis.hset('quota:storage', 'carol@example.org', '1000');
  // a real Redis error in the first step after the record goes: the set of the account's
  // webmail sessions is a string, so SMEMBERS fails with WRONGTYPE
  await redis.set('webmail:sessions:carol@example.org', 'not a set');

  const first = await cli.run(['user', 'del', 'carol@example.org']);
  assert.equal(first.stdout, 'deleted account carol@example.org\n');
  assert.match(
    first.stderr,
    /^mailyard: account carol@example\.org is deleted, but its webmail sessions were not ended \(Redis: WRONGTYPE [^)\n]*\); deleting it again finishes the clean-up\n$/,
  );
  assert.equal(first.code, 75); // EX_TEMPFAIL, as dns check: done, but run it again
  assert.equal(await cli.directory.accountExists('carol@example.org'), false);
  // the steps after the failed one ran
  assert.equal(await redis.hget('quota:storage', 'carol@example.org'), null);
  assert.match(await cli.ok(['audit', '-n', '1']), /\taccount\.del\tcarol@example\.org\n$/);
  // a new account of the address would inherit the old one's sessions: not while they stay
  const add = await cli.run(['user', 'add', 'carol@example.org', '--password-stdin'], {
    input: GOOD_PASSWORD,
  });
  assert.equal(add.code, 75); // a temporary failure: the same command works once Redis does
  assert.match(
    add.stderr,
    /^mailyard: account carol@example\.org cannot be created yet: .*its webmail sessions were not ended[^\n]*\n$/,
  );
  assert.equal(await cli.directory.accountExists('carol@example.org'), false);

  // the trouble is gone; a webmail session of the account is still open
  await redis.del('webmail:sessions:carol@example.org');
  await redis.set('webmail:session:open', '{}');
  await redis.sadd('webmail:sessions:carol@example.org', 'webmail:session:open');
  const second = await cli.run(['user', 'del', 'Carol@example.org']);
  assert.deepEqual(second, {
    code: 0,
    stdout: 'finished the clean-up of deleted account carol@example.org\n',
    stderr: '',
  });
  assert.equal(await redis.exists('webmail:session:open', 'webmail:sessions:carol@example.org'), 0);

  const third = await cli.run(['user', 'del', 'carol@example.org']);
  assert.deepEqual(third, {
    code: 1,
    stdout: '',
    stderr: 'mailyard: account carol@example.org does not exist\n',
  });
});

test('user add of an address whose deletion left clean-up undone finishes it first', async (t) => {
  const cli = await withDomain(t);
  const redis = new Redis(REDIS_URL, { keyPrefix: cli.prefix });
  t.after(() => redis.quit());
  await cli.ok(['user', 'add', 'dan@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  await redis.set('webmail:sessions:dan@example.org', 'not a set');
  assert.equal((await cli.run(['user', 'del', 'dan@example.org'])).code, 75);
  // the old owner's webmail session, which the new owner must not get
  await redis.del('webmail:sessions:dan@example.org');
  await redis.set('webmail:session:old-owner', '{}');
  await redis.sadd('webmail:sessions:dan@example.org', 'webmail:session:old-owner');
  await cli.ok(['user', 'add', 'dan@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  assert.equal(await redis.exists('webmail:session:old-owner'), 0);
  // nothing left: deleting the new account is an ordinary deletion
  assert.deepEqual(await cli.run(['user', 'del', 'dan@example.org']), {
    code: 0,
    stdout: 'deleted account dan@example.org\n',
    stderr: '',
  });
});

test('user list shows every account, or one domain’s', async (t) => {
  const cli = await withDomain(t);
  await cli.ok(['domain', 'add', 'b.test']);
  for (const a of ['zed@example.org', 'amy@example.org', 'carl@b.test'])
    await cli.ok(['user', 'add', a, '--password-stdin'], { input: GOOD_PASSWORD });
  assert.equal(await cli.ok(['user', 'list']), 'amy@example.org\ncarl@b.test\nzed@example.org\n');
  assert.equal(await cli.ok(['user', 'list', 'Example.ORG']), 'amy@example.org\nzed@example.org\n');
  assert.equal(await cli.ok(['user', 'list', 'b.test']), 'carl@b.test\n');
  const r = await cli.run(['user', 'list', 'other.test']);
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr,
    'mailyard: domain other.test is not a local domain (add it with: mailyard domain add other.test)\n',
  );
});

test('no password ever reaches stdout or stderr', async (t) => {
  const cli = await withDomain(t);
  const runs = [
    await cli.run(['user', 'add', 'alice@example.org', '--password-stdin'], { input: GOOD_PASSWORD }),
    await cli.run(['user', 'add', 'alice@example.org', '--password-stdin'], { input: GOOD_PASSWORD }),
    await cli.run(['user', 'add', 'bob@other.test', '--password-stdin'], { input: GOOD_PASSWORD }),
    await cli.run(['user', 'passwd', 'alice@example.org', '--password-stdin'], { input: NEW_PASSWORD }),
    await cli.run(['user', 'passwd', 'alice@example.org', '--password-stdin'], {
      input: `${NEW_PASSWORD}\nx`,
    }),
  ];
  for (const r of runs) assert.doesNotMatch(r.stdout + r.stderr, /horse|fine passphrase/);
});

test('user lock refuses every login of the account until unlock; both are audited', async (t) => {
  const cli = await withDomain(t);
  await cli.ok(['user', 'add', 'carol@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  assert.equal(await cli.ok(['user', 'lock', 'Carol@example.org']), 'locked account carol@example.org\n');
  const since = (await cli.directory.accountRecord('carol@example.org'))?.locked;
  assert.ok(since);
  // locked again, it is still locked since the first time
  await waitFor(() => new Date().toISOString() !== since, { what: 'the clock past the lock' });
  await cli.ok(['user', 'lock', 'carol@example.org']);
  assert.equal((await cli.directory.accountRecord('carol@example.org'))?.locked, since);
  assert.equal(await cli.ok(['user', 'unlock', 'carol@example.org']), 'unlocked account carol@example.org\n');
  assert.equal((await cli.directory.accountRecord('carol@example.org'))?.locked, undefined);
  assert.deepEqual(await cli.run(['user', 'lock', 'nobody@example.org']), {
    code: 1,
    stdout: '',
    stderr: 'mailyard: account nobody@example.org does not exist\n',
  });
  const audit = await cli.ok(['audit', '-n', '2']);
  assert.match(audit, /\taccount\.unlock\tcarol@example\.org\n.*\taccount\.lock\tcarol@example\.org\n$/);
});

test('user quota sets, removes and refuses quotas in the sizes QUOTA_STORAGE takes', async (t) => {
  const cli = await withDomain(t);
  await cli.ok(['user', 'add', 'dave@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  assert.equal(
    await cli.ok(['user', 'quota', 'dave@example.org', '512M']),
    'quota of dave@example.org: 536870912 bytes\n',
  );
  assert.equal(
    await cli.ok(['user', 'quota', 'dave@example.org', '1']),
    'quota of dave@example.org: 1 byte\n',
  );
  assert.equal(
    await cli.ok(['user', 'quota', 'dave@example.org', 'unlimited']),
    'quota of dave@example.org: unlimited\n',
  );
  assert.equal(
    await cli.ok(['user', 'quota', 'dave@example.org', 'default']),
    'dave@example.org has the default quota again\n',
  );
  assert.deepEqual(await cli.run(['user', 'quota', 'dave@example.org', 'lots']), {
    code: 1,
    stdout: '',
    stderr: 'mailyard: "lots" is not a quota (a size such as 512M or 2G, "unlimited", or "default")\n',
  });
});

test('user reset-2fa turns two-factor off, and says so when it was not on', async (t) => {
  const cli = await withDomain(t);
  await cli.ok(['user', 'add', 'erin@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  assert.deepEqual(await cli.run(['user', 'reset-2fa', 'erin@example.org']), {
    code: 1,
    stdout: '',
    stderr: 'mailyard: two-factor login is not on for erin@example.org\n',
  });
  const redis = new Redis(REDIS_URL, { keyPrefix: cli.prefix });
  t.after(() => redis.disconnect());
  await redis.hset('account:erin@example.org', 'totp', 'JBSWY3DPEHPK3PXP');
  assert.equal(
    await cli.ok(['user', 'reset-2fa', 'erin@example.org']),
    'two-factor login is off for erin@example.org\n',
  );
  assert.equal(await redis.hget('account:erin@example.org', 'totp'), null);
});
