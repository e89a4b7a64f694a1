import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { skipWithout } from '@mailyard/testkit';
import { GOOD_PASSWORD, cliHarness, fakeTty, repoRoot } from './harness.js';

async function withAccountDomain(t: Parameters<typeof cliHarness>[0]) {
  const cli = cliHarness(t);
  await cli.ok(['domain', 'add', 'example.org']);
  return cli;
}

test('user add prompts twice on a terminal, echoing nothing', async (t) => {
  const cli = await withAccountDomain(t);
  const tty = fakeTty();
  tty.write(`${GOOD_PASSWORD}\r`);
  tty.write(`${GOOD_PASSWORD}\r`);
  const r = await cli.run(['user', 'add', 'Alice@example.org'], { tty });
  assert.deepEqual(r, {
    code: 0,
    stdout: 'added account alice@example.org\n',
    stderr: 'Password for alice@example.org: \nRetype the password: \n',
  });
  assert.deepEqual(tty.rawModes, [true, false], 'raw mode on while reading, off after');
  assert.ok(await cli.directory.authenticate('alice@example.org', GOOD_PASSWORD));
});

test('a pasted answer to both prompts in one chunk, with editing keys', async (t) => {
  const cli = await withAccountDomain(t);
  const tty = fakeTty();
  // "xy" erased by two backspaces; an arrow key's escape sequence ignored; Ctrl-U clears a line
  tty.write(`xy\x7f\x7f${GOOD_PASSWORD}\x1b[D\rgarbage\x15${GOOD_PASSWORD}\n`);
  const r = await cli.run(['user', 'add', 'alice@example.org'], { tty });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(await cli.directory.authenticate('alice@example.org', GOOD_PASSWORD));
});

test('user passwd prompts on a terminal', async (t) => {
  const cli = await withAccountDomain(t);
  await cli.ok(['user', 'add', 'alice@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  const tty = fakeTty();
  tty.write('brand new passphrase\rbrand new passphrase\r');
  const r = await cli.run(['user', 'passwd', 'alice@example.org'], { tty });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, 'Password for alice@example.org: \nRetype the password: \n');
  assert.ok(await cli.directory.authenticate('alice@example.org', 'brand new passphrase'));
});

test('passwords that do not match are refused', async (t) => {
  const cli = await withAccountDomain(t);
  const tty = fakeTty();
  tty.write(`${GOOD_PASSWORD}\r${GOOD_PASSWORD}!\r`);
  const r = await cli.run(['user', 'add', 'alice@example.org'], { tty });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /\nmailyard: the two passwords do not match\n$/);
  assert.deepEqual(tty.rawModes, [true, false]);
  assert.deepEqual(await cli.directory.listUsers(), []);
});

test('a weak password is refused before it is retyped', async (t) => {
  const cli = await withAccountDomain(t);
  const tty = fakeTty();
  tty.write('short\r');
  const r = await cli.run(['user', 'add', 'alice@example.org'], { tty });
  assert.deepEqual(r, {
    code: 1,
    stdout: '',
    stderr: 'Password for alice@example.org: \nmailyard: password is too short (at least 10 characters)\n',
  });
  const tty2 = fakeTty();
  tty2.write('\r');
  const r2 = await cli.run(['user', 'add', 'alice@example.org'], { tty: tty2 });
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /\nmailyard: password is empty\n$/);
});

test('nothing is prompted for when the account cannot be created or changed', async (t) => {
  const cli = await withAccountDomain(t);
  await cli.ok(['user', 'add', 'alice@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  const cases = [
    [['user', 'add', 'alice@example.org'], 'account alice@example.org already exists'],
    [
      ['user', 'add', 'bob@other.test'],
      'domain other.test is not a local domain (add it with: mailyard domain add other.test)',
    ],
    [['user', 'add', 'bob'], '"bob" is not a valid address'],
    [['user', 'passwd', 'bob@example.org'], 'account bob@example.org does not exist'],
  ] as const;
  for (const [argv, message] of cases) {
    const tty = fakeTty();
    const r = await cli.run([...argv], { tty });
    assert.deepEqual(r, { code: 1, stdout: '', stderr: `mailyard: ${message}\n` }, argv.join(' '));
    assert.deepEqual(tty.rawModes, []);
  }
});

test('Ctrl-C at the prompt stops with 130 and leaves the terminal cooked', async (t) => {
  const cli = await withAccountDomain(t);
  const tty = fakeTty();
  tty.write('half a pass\x03');
  const r = await cli.run(['user', 'add', 'alice@example.org'], { tty });
  assert.equal(r.code, 130);
  assert.equal(r.stderr, 'Password for alice@example.org: \nmailyard: interrupted\n');
  assert.deepEqual(tty.rawModes, [true, false]);
  assert.deepEqual(await cli.directory.listUsers(), []);
});

test('a terminal that closes mid-prompt is an error, not a hang', async (t) => {
  const cli = await withAccountDomain(t);
  const tty = fakeTty();
  tty.end('partial');
  const r = await cli.run(['user', 'add', 'alice@example.org'], { tty });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /\nmailyard: the terminal closed before a password was entered\n$/);
  assert.deepEqual(tty.rawModes, [true, false]);
});

// The real thing: the CLI as a process on a pseudo-terminal, typed at only once each
// prompt is shown (as a person would), so the terminal's own echo is part of the test.
const PTY_DRIVER = String.raw`
import json, os, pty, select, sys, time
password = sys.argv[1].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
seen = b''
def read_until(marker, deadline):
    global seen
    while marker not in seen:
        left = deadline - time.time()
        if left <= 0:
            return False
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:
            return False
        if not data:
            return False
        seen += data
    return True
deadline = time.time() + 60
for prompt in (b'Password for', b'Retype'):
    if not read_until(prompt, deadline):
        break
    time.sleep(0.05)
    os.write(fd, password + b'\r')
read_until(b'\x00never', deadline)
_, status = os.waitpid(pid, 0)
print(json.dumps({'status': os.waitstatus_to_exitcode(status), 'output': seen.decode('utf-8', 'replace')}))
`;

test('on a real terminal the prompt echoes nothing and the account works', async (t) => {
  const python = spawnSync('python3', ['-c', 'import pty'], { encoding: 'utf8' });
  const skip = skipWithout(python.status === 0, 'python3 with the pty module is not available');
  if (skip) {
    t.skip(skip);
    return;
  }
  const cli = await withAccountDomain(t);
  const r = spawnSync(
    'python3',
    [
      '-c',
      PTY_DRIVER,
      GOOD_PASSWORD,
      process.execPath,
      '--import',
      'tsx',
      'packages/cli/src/main.ts',
      'user',
      'add',
      'alice@example.org',
    ],
    {
      cwd: repoRoot,
      env: { ...process.env, REDIS_PREFIX: cli.prefix, MAILYARD_CONFIG: '' },
      encoding: 'utf8',
      timeout: 90_000,
    },
  );
  assert.equal(r.status, 0, r.stderr);
  const { status, output } = JSON.parse(r.stdout) as { status: number; output: string };
  assert.equal(status, 0, output);
  assert.match(output, /Password for alice@example\.org: /);
  assert.match(output, /Retype the password: /);
  assert.match(output, /added account alice@example\.org/);
  assert.doesNotMatch(output, /horse/, 'the password was echoed');
  assert.ok(await cli.directory.authenticate('alice@example.org', GOOD_PASSWORD));
});
