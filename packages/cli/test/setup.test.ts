// `mailyard setup`: the first start of a compose installation. Generated passwords (never
// a default), the files compose and the third-party servers read, the DNS records; and
// the platform's own clients reaching a Redis that requires the generated password.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { startPrivateRedis, tempDir } from '@mailyard/testkit';
import { parse as parseYaml } from 'yaml';
import { GENERATED_SECRETS } from '../src/commands/setup.js';
import { cliHarness, repoRoot } from './harness.js';

/** A checkout as an administrator has it: the compose file and deploy/. */
function checkout() {
  const dir = tempDir('mailyard-setup-');
  mkdirSync(join(dir.path, 'deploy'));
  cpSync(join(repoRoot, 'deploy', 'alertmanager'), join(dir.path, 'deploy', 'alertmanager'), {
    recursive: true,
  });
  cpSync(join(repoRoot, 'docker-compose.yml'), join(dir.path, 'docker-compose.yml'));
  return dir;
}

test('writes generated passwords, .env and the derived files, and prints the DNS records', async (t) => {
  const dir = checkout();
  t.after(() => dir.cleanup());
  const cli = cliHarness(t);
  const args = ['setup', '--dir', dir.path, '--hostname', 'Mail.Example.ORG', '--domain', 'example.org'];
  const out = await cli.ok([...args, '--ip', '192.0.2.25']);
  assert.match(out, /^mail\.example\.org\.\tIN A\t192\.0\.2\.25$/m);
  assert.match(out, /^example\.org\.\tIN MX\t10 mail\.example\.org\.$/m);
  assert.match(out, /^example\.org\.\tIN TXT\t"v=spf1 mx -all"$/m);
  assert.match(
    out,
    /^_dmarc\.example\.org\.\tIN TXT\t"v=DMARC1; p=quarantine; rua=mailto:postmaster@example\.org"$/m,
  );
  assert.match(out, /reverse record \(PTR\) of 192\.0\.2\.25: mail\.example\.org\./);
  assert.match(out, /mailyard dkim generate example\.org/);

  const secrets = join(dir.path, 'secrets');
  assert.equal(statSync(secrets).mode & 0o777, 0o700);
  const passwords = GENERATED_SECRETS.map((s) => readFileSync(join(secrets, s), 'utf8').trim());
  for (const p of passwords) assert.match(p, /^[\w-]{32}$/);
  assert.equal(new Set(passwords).size, passwords.length, 'one password each');
  for (const p of passwords) assert.ok(!out.includes(p), 'no password printed');
  const env = readFileSync(join(dir.path, '.env'), 'utf8');
  assert.match(env, /^MYHOSTNAME=mail\.example\.org$/m);
  // the relay counts the public address as its own (loop detection behind NAT)
  assert.match(env, /^MAILYARD_PUBLIC_IP=192\.0\.2\.25$/m);
  const relayEnv = (
    parseYaml(readFileSync(join(dir.path, 'docker-compose.yml'), 'utf8')) as {
      services: Record<string, { environment: Record<string, string> }>;
    }
  ).services['outbound-relay']!.environment;
  assert.equal(relayEnv.PROXY_INTERFACES, '${MAILYARD_PUBLIC_IP:-}');
  for (const p of passwords) assert.ok(!env.includes(p), '.env holds no password');
  assert.equal(
    readFileSync(join(secrets, 'redis.conf'), 'utf8'),
    `requirepass ${passwords[GENERATED_SECRETS.indexOf('redis-password')]}\n`,
  );
  assert.match(readFileSync(join(secrets, 'rabbitmq.conf'), 'utf8'), /^default_pass = [\w-]{32}$/m);

  // every secret file docker-compose.yml needs is there now (compose refuses to start
  // while one is missing)
  const compose = parseYaml(readFileSync(join(dir.path, 'docker-compose.yml'), 'utf8')) as {
    secrets: Record<string, { file: string }>;
  };
  for (const [name, s] of Object.entries(compose.secrets))
    assert.ok(existsSync(join(dir.path, s.file)), `${name}: ${s.file}`);

  // the Alertmanager's configuration, with the addresses of this installation, is valid
  const am = readFileSync(join(secrets, 'alertmanager.yml'), 'utf8');
  assert.match(am, /smtp_auth_username: alerts@example\.org/);
  assert.match(am, /to: postmaster@example\.org/);
  const check = spawnSync('amtool', ['check-config', join(secrets, 'alertmanager.yml')], {
    encoding: 'utf8',
  });
  assert.equal(check.status, 0, check.stdout + check.stderr);

  // a second run refuses to overwrite; with --force it keeps the passwords
  const again = await cli.run(args);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^mailyard: .*\.env exists already; pass --force/);
  await cli.ok([...args, '--force']);
  assert.deepEqual(
    GENERATED_SECRETS.map((s) => readFileSync(join(secrets, s), 'utf8').trim()),
    passwords,
  );
});

test('refuses bad input with one sentence, writing nothing', async (t) => {
  const dir = checkout();
  t.after(() => dir.cleanup());
  const cli = cliHarness(t);
  const base = ['setup', '--dir', dir.path, '--hostname', 'mail.example.org'];
  for (const [argv, message] of [
    [[...base, '--domain', 'exa mple.org'], /"exa mple\.org" is not a valid domain name/],
    [[...base, '--domain', 'example.org', '--ip', '300.1.1.1'], /--ip 300\.1\.1\.1 is not an IP address/],
    [['setup', '--hostname', 'mail.example.org'], /required option '--domain <domain>' not specified/],
    [
      ['setup', '--dir', join(dir.path, 'deploy'), '--hostname', 'm.example.org', '--domain', 'example.org'],
      /is not a Mailyard checkout/,
    ],
  ] as const) {
    const r = await cli.run([...argv]);
    assert.notEqual(r.code, 0, argv.join(' '));
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  }
  assert.ok(!existsSync(join(dir.path, '.env')));
  assert.ok(!existsSync(join(dir.path, 'secrets')));
});

test('the CLI reaches a Redis that requires the generated password, through REDIS_PASSWORD_FILE', async (t) => {
  const dir = checkout();
  t.after(() => dir.cleanup());
  const cli = cliHarness(t);
  await cli.ok(['setup', '--dir', dir.path, '--hostname', 'mail.example.org', '--domain', 'example.org']);
  const redis = await startPrivateRedis();
  t.after(() => redis.close());
  const conf = readFileSync(join(dir.path, 'secrets', 'redis.conf'), 'utf8');
  const [directive, password] = conf.trim().split(' ');
  await redis.client().config('SET', directive!, password!);

  const env = { REDIS_URL: redis.url, REDIS_PREFIX: 'setup-test:' };
  const refused = await cli.run(['domain', 'list'], { env });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /NOAUTH|WRONGPASS|Authentication/i);
  const withFile = { ...env, REDIS_PASSWORD_FILE: join(dir.path, 'secrets', 'redis-password') };
  await cli.ok(['domain', 'add', 'example.org'], { env: withFile });
  assert.equal(await cli.ok(['domain', 'list'], { env: withFile }), 'example.org\n');
});
