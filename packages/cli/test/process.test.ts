import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { entryArgs } from '@mailyard/testkit';
import { GOOD_PASSWORD, cliHarness, repoRoot, runProcess } from './harness.js';

// The same program as the in-process tests, run as the operator runs it: a node
// process started from the repository root, so exit statuses, stdio and the absence
// of lingering handles (a process that never exits) are the real ones.

test('process: a session of domain, user and alias commands', async (t) => {
  const cli = cliHarness(t);
  const env = { REDIS_PREFIX: cli.prefix };
  const add = runProcess(['domain', 'add', 'example.org', '--no-dkim'], { env });
  assert.deepEqual([add.code, add.stderr], [0, '']);
  assert.match(add.stdout, /^added domain example\.org\n/);
  const user = runProcess(['user', 'add', 'alice@example.org', '--password-stdin'], {
    env,
    input: `${GOOD_PASSWORD}\n`,
  });
  assert.deepEqual([user.code, user.stdout, user.stderr], [0, 'added account alice@example.org\n', '']);
  const alias = runProcess(['alias', 'add', '@example.org', 'alice@example.org'], { env });
  assert.equal(alias.code, 0, alias.stderr);
  const list = runProcess(['alias', 'list', 'example.org'], { env });
  assert.deepEqual([list.code, list.stdout], [0, '@example.org\talice@example.org\n']);
  assert.ok(await cli.directory.authenticate('alice@example.org', GOOD_PASSWORD));
});

test('process: operational errors exit 1 with one line on stderr', async (t) => {
  const cli = cliHarness(t);
  const env = { REDIS_PREFIX: cli.prefix };
  await cli.ok(['domain', 'add', 'example.org']);
  const dup = runProcess(['domain', 'add', 'example.org'], { env });
  assert.deepEqual(
    [dup.code, dup.stdout, dup.stderr],
    [1, '', 'mailyard: domain example.org already exists\n'],
  );
  const unknown = runProcess(['user', 'add', 'bob@other.test', '--password-stdin'], {
    env,
    input: GOOD_PASSWORD,
  });
  assert.deepEqual(
    [unknown.code, unknown.stderr],
    [1, 'mailyard: domain other.test is not a local domain (add it with: mailyard domain add other.test)\n'],
  );
  const weak = runProcess(['user', 'add', 'bob@example.org', '--password-stdin'], { env, input: '' });
  assert.deepEqual([weak.code, weak.stderr], [1, 'mailyard: password is empty\n']);
  const invalid = runProcess(['alias', 'add', 'x@@example.org', 'bob@example.org'], { env });
  assert.deepEqual(
    [invalid.code, invalid.stderr],
    [1, 'mailyard: "x@@example.org" is not a valid address\n'],
  );
});

test('process: usage errors exit 2', () => {
  const none = runProcess([]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /^Usage: mailyard /);
  const missing = runProcess(['user', 'passwd']);
  assert.deepEqual([missing.code, missing.stderr], [2, "mailyard: missing required argument 'address'\n"]);
  // stdin is a pipe here, not a terminal, so there is nobody to prompt
  const noPassword = runProcess(['user', 'add', 'a@example.org'], { input: GOOD_PASSWORD });
  assert.equal(noPassword.code, 2);
  assert.match(noPassword.stderr, /^mailyard: no password given: [^\n]+\n$/);
});

test('process: Redis unreachable fails fast with one line naming the URL, password hidden', () => {
  const r = runProcess(['domain', 'list'], { env: { REDIS_URL: 'redis://:hunter2hunter2@127.0.0.1:1' } });
  assert.equal(r.signal, null, 'the process hung and was killed');
  assert.equal(r.code, 1);
  assert.equal(r.stdout, '');
  assert.equal(
    r.stderr,
    'mailyard: Redis unreachable at redis://:***@127.0.0.1:1 (connect ECONNREFUSED 127.0.0.1:1)\n',
  );
  // Startup (tsx compiling the sources) dominates; the failure itself takes milliseconds.
  assert.ok(r.ms < 20_000, `took ${r.ms} ms`);
});

test('process: `pnpm mailyard` runs the CLI from a checkout, with nothing of pnpm around it', () => {
  const pnpm = (...args: string[]) =>
    spawnSync('pnpm', args, {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, MAILYARD_CONFIG: '' },
    });
  const help = pnpm('mailyard', 'domain', '--help');
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /^Usage: mailyard domain \[options\] \[command\]/);
  // an error is the CLI's one line and its exit status: no banner, no ELIFECYCLE
  for (const args of [['mailyard'], ['exec', 'mailyard']]) {
    const bad = pnpm(...args, 'domain', 'frob');
    assert.deepEqual(
      [bad.status, bad.stdout, bad.stderr],
      [2, '', "mailyard: unknown command 'frob'\n"],
      args.join(' '),
    );
  }
});

/**
 * The third-party packages a `mailyard` process loaded: NODE_DEBUG=module names the
 * CommonJS files it loads, NODE_DEBUG=esm the ES modules (otplib, zod).
 */
function packagesLoaded(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = runProcess(args, { env: { ...env, NODE_DEBUG: 'module,esm' } });
  const names = new Set<string>();
  const files = [
    ...[...r.stderr.matchAll(/^MODULE \d+: load "([^"]+)"/gm)].map((m) => m[1]!),
    ...[...r.stderr.matchAll(/^ESM \d+: Translating \w+ (file:\S+)/gm)].map((m) => m[1]!),
  ];
  for (const file of files) {
    const name = /.*\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file)?.[1];
    if (name) names.add(name);
  }
  return { code: r.code, names };
}

test('process: a command loads no more than it uses, so it starts quickly', async (t) => {
  const cli = cliHarness(t);
  await cli.ok(['domain', 'add', 'example.org', '--no-dkim']);
  const notAtStart = [
    // the ops server's (no command serves HTTP or metrics)
    'fastify',
    'prom-client',
    // each loaded where a command first needs it: RabbitMQ and logging (queue), DNS
    // questions (dns check), archives (backup, restore), two-factor codes, password hashes
    'amqplib',
    'pino',
    'dns-packet',
    'tar-stream',
    'otplib',
    '@node-rs/argon2',
  ];
  // self-signed certificates (node-forge), which only services make, and the YAML parser,
  // which no MAILYARD_CONFIG file here needs: @mailyard/config's index exports both, and
  // only the bundle leaves out what is not used (its sideEffects)
  if (entryArgs('packages/cli')[0]!.endsWith('dist/main.js'))
    notAtStart.push('selfsigned', 'node-forge', 'yaml');
  for (const args of [
    ['--help'],
    ['domain', 'list'],
    ['alias', 'list'],
    ['alias', 'add', '@example.org', 'postmaster@example.org'],
  ]) {
    const { code, names } = packagesLoaded(args, { REDIS_PREFIX: cli.prefix });
    assert.equal(code, 0, args.join(' '));
    assert.ok(names.has('commander') && names.has('zod'), `${args.join(' ')}: no modules seen`);
    // Redis only for a command that connects to it
    const unused = args[0] === '--help' ? [...notAtStart, 'ioredis'] : notAtStart;
    assert.deepEqual(
      unused.filter((name) => names.has(name)),
      [],
      `mailyard ${args.join(' ')} loaded them`,
    );
    if (args[0] !== '--help') assert.ok(names.has('ioredis'), `${args.join(' ')}: no Redis client seen`);
  }
});
