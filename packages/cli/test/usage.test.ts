import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { REDIS_URL } from '@mailyard/testkit';
import { cliHarness } from './harness.js';

test('no command prints the help on stderr and exits 2', async (t) => {
  const cli = cliHarness(t);
  const r = await cli.run([]);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^Usage: mailyard /);
  for (const group of ['domain', 'user', 'alias']) assert.match(r.stderr, new RegExp(`\\n  ${group} `));
});

test('a group without a verb prints its help on stderr and exits 2', async (t) => {
  const cli = cliHarness(t);
  const r = await cli.run(['user']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^Usage: mailyard user /);
  for (const verb of ['add', 'passwd', 'del', 'list']) assert.match(r.stderr, new RegExp(`\\n  ${verb} `));
});

test('--help prints on stdout and exits 0', async (t) => {
  const cli = cliHarness(t);
  const r = await cli.run(['user', 'add', '--help']);
  assert.equal(r.code, 0);
  assert.equal(r.stderr, '');
  assert.match(r.stdout, /^Usage: mailyard user add \[options\] <address>/);
  assert.match(r.stdout, /--password-stdin/);
  assert.doesNotMatch(r.stdout, /--password </, 'the refused --password option stays out of the help');
});

test('usage errors are one line on stderr with exit 2', async (t) => {
  const cli = cliHarness(t);
  const cases = [
    [['frob'], "unknown command 'frob'"],
    [['domain', 'ad', 'x.test'], "unknown command 'ad' (Did you mean add?)"],
    [['domain', 'add'], "missing required argument 'domain'"],
    [['domain', 'add', 'a.test', 'b.test'], "too many arguments for 'add'. Expected 1 argument but got 2."],
    [['user', 'add'], "missing required argument 'address'"],
    [['user', 'list', '--verbose'], "unknown option '--verbose'"],
    [['alias', 'del'], "missing required argument 'source'"],
  ] as const;
  for (const [argv, message] of cases) {
    const r = await cli.run([...argv]);
    assert.deepEqual(r, { code: 2, stdout: '', stderr: `mailyard: ${message}\n` }, argv.join(' '));
  }
  // none of them touched Redis
  assert.deepEqual(await cli.directory.listDomains(), []);
});

test('Redis unreachable: one line naming the URL with its password hidden, exit 1, quickly', async (t) => {
  const cli = cliHarness(t);
  for (const argv of [
    ['domain', 'list'],
    ['domain', 'add', 'example.org'],
    ['user', 'add', 'a@example.org', '--password-stdin'],
    ['alias', 'list'],
  ]) {
    const started = Date.now();
    const r = await cli.run(argv, {
      env: { REDIS_URL: 'redis://admin:s3cret-pw@127.0.0.1:1/0' },
      input: 'a long enough secret',
    });
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.equal(
      r.stderr,
      'mailyard: Redis unreachable at redis://admin:***@127.0.0.1:1/0 (connect ECONNREFUSED 127.0.0.1:1)\n',
    );
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
  }
});

test('a Redis that accepts connections but never answers is given up on', async (t) => {
  const cli = cliHarness(t);
  const sockets = new Set<Socket>();
  const silent = createServer((s) => sockets.add(s)).listen(0, '127.0.0.1');
  await once(silent, 'listening');
  t.after(() => {
    for (const s of sockets) s.destroy();
    silent.close();
  });
  const url = `redis://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  const started = Date.now();
  const r = await cli.run(['domain', 'list'], { env: { REDIS_URL: url }, connectDeadlineMs: 500 });
  assert.equal(r.code, 1);
  assert.equal(r.stderr, `mailyard: Redis unreachable at ${url} (no answer within 0.5 s)\n`);
  assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
});

test('an invalid REDIS_URL is a config error naming the variable', async (t) => {
  const cli = cliHarness(t);
  const r = await cli.run(['domain', 'list'], { env: { REDIS_URL: 'http://127.0.0.1:6379' } });
  assert.equal(r.code, 78);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^mailyard: config error: REDIS_URL: [^\n]+"http:\/\/127\.0\.0\.1:6379"\n$/);
});

test('the MAILYARD_CONFIG file is read, and one that is not YAML is a config error', async (t) => {
  const cli = cliHarness(t);
  await cli.ok(['domain', 'add', 'example.org', '--no-dkim']);
  const dir = mkdtempSync(join(tmpdir(), 'mailyard-cli-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'mailyard.yml');
  // the prefix only in the file, as services and the CLI share it
  writeFileSync(file, `redis_prefix: "${cli.prefix}"\nsmtp_port: 25\n`);
  const env = { REDIS_URL, MAILYARD_CONFIG: file };
  assert.equal(await cli.ok(['domain', 'list'], { env }), 'example.org\n');
  writeFileSync(file, 'redis_prefix: [unclosed\n');
  const bad = await cli.run(['domain', 'list'], { env });
  assert.deepEqual([bad.code, bad.stdout], [78, '']);
  assert.match(bad.stderr, /^mailyard: config error: MAILYARD_CONFIG: \S+ is not valid YAML: [^\n]+\n$/);
  const gone = await cli.run(['domain', 'list'], { env: { ...env, MAILYARD_CONFIG: join(dir, 'none.yml') } });
  assert.deepEqual(
    [gone.code, gone.stderr],
    [78, `mailyard: config error: MAILYARD_CONFIG: cannot read ${join(dir, 'none.yml')}: ENOENT\n`],
  );
});

test('REDIS_PREFIX keeps installations apart', async (t) => {
  const a = cliHarness(t);
  const b = cliHarness(t);
  await a.ok(['domain', 'add', 'a.test']);
  await b.ok(['domain', 'add', 'b.test']);
  assert.equal(await a.ok(['domain', 'list']), 'a.test\n');
  assert.equal(await b.ok(['domain', 'list']), 'b.test\n');
});
