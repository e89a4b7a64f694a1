// Every command README.md shows, run as written where this machine can: the `mailyard`
// CLI against a Redis prefix and a RabbitMQ vhost of the test's own, `--check-config` of
// every service, and the try-out (`pnpm start` on the README's ports, moved to free ones,
// then the checks it shows). The others are listed in NOT_HERE with the reason: a command
// added to the README must be put in one place or the other, so none can rot unseen.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  REDIS_URL,
  createTestRedis,
  createVhost,
  freePort,
  maildirMessages,
  startDnsServer,
  tempDir,
  waitFor,
  type TestDnsServer,
  type TestRedis,
  type TestVhost,
} from '@mailyard/testkit';

const root = new URL('..', import.meta.url).pathname;
const readme = readFileSync(join(root, 'README.md'), 'utf8');

interface Block {
  /** The `##`/`###` heading the block is under. */
  section: string;
  commands: string[];
}

/** Strips a trailing `# comment` that is outside quotes. */
function stripComment(line: string): string {
  let quote: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === quote) quote = null;
    } else if (c === "'" || c === '"') quote = c;
    else if (c === '#' && (i === 0 || /\s/.test(line[i - 1]!))) return line.slice(0, i).trimEnd();
  }
  return line;
}

/** The ```sh blocks, each split into shell commands (continuations and here-documents kept whole). */
function shellBlocks(md: string): Block[] {
  const blocks: Block[] = [];
  let section = '';
  const lines = md.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const heading = /^#{2,3} (.*)/.exec(lines[i]!);
    if (heading) section = heading[1]!;
    if (lines[i] !== '```sh') continue;
    const commands: string[] = [];
    let current = '';
    let heredoc: string | null = null;
    for (i++; lines[i] !== '```'; i++) {
      const line = lines[i]!;
      if (heredoc !== null) {
        current += `\n${line}`;
        if (line === heredoc) {
          heredoc = null;
          commands.push(current);
          current = '';
        }
        continue;
      }
      const text = stripComment(line);
      if (!text.trim()) continue;
      current += current ? `\n${text}` : text;
      const h = /<<'?(\w+)'?\s*$/.exec(text);
      if (h) heredoc = h[1]!;
      else if (!/(\\|\|)$/.test(text)) {
        commands.push(current);
        current = '';
      }
    }
    blocks.push({ section, commands });
  }
  return blocks;
}

const blocks = shellBlocks(readme);
const all = blocks.flatMap((b) => b.commands.map((command) => ({ section: b.section, command })));

/** Commands this machine cannot run, and why. */
const NOT_HERE: [RegExp, string][] = [
  [
    /^pnpm install && pnpm start$/,
    'installs and runs the whole platform in the foreground (the try-out runs it)',
  ],
  [/^pnpm test( \[filter\])?$/, 'the whole suite, of which this is a part'],
  [/^pnpm (build|typecheck|lint)$/, 'checked by CI itself (.ci/run)'],
  [/^pnpm bench:/, 'benchmarks are not tests'],
  [/mail\.example\.org/, 'needs the real host; the try-out runs the same checks on localhost'],
  [
    /^pnpm mailyard (backup|restore) \/var\/backups\//,
    'writes and reads an archive outside the checkout; test/backup.test.ts runs both on a running platform',
  ],
];

/** The try-out: the start command, and the block of checks after it. */
const startCommand = all.find((c) => /\bpnpm start$/.test(c.command) && /SMTP_PORT=/.test(c.command));
const tryOutBlock = blocks.find((b) => b.commands.some((c) => /localhost:\d+/.test(c)));
const cliBlocks = blocks.filter(
  (b) => b !== tryOutBlock && b.commands.some((c) => /\bpnpm mailyard /.test(c)),
);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs one README command with bash, from the repository root, as a user would paste it. */
function sh(command: string, env: NodeJS.ProcessEnv, input = ''): Promise<Run> {
  return new Promise((resolve) => {
    // a session of its own: no terminal, so a password prompt reads standard input
    const child = spawn('bash', ['-c', command], {
      cwd: root,
      env: { ...process.env, MAILYARD_CONFIG: '', ...env },
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(input);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

// The four parts share nothing (each its own Redis prefix, vhost, ports and maildir) and
// go side by side: the try-out's platform starts while the CLI commands run.
describe('README.md', { concurrency: true }, () => {
  test('every command of the README is run here or listed with the reason it cannot be', () => {
    assert.ok(startCommand, 'the try-out start command');
    assert.ok(tryOutBlock, 'the try-out checks');
    const classified = (c: string) =>
      c === startCommand.command ||
      tryOutBlock.commands.includes(c) ||
      /\bpnpm mailyard /.test(c) ||
      NOT_HERE.some(([re]) => re.test(c));
    assert.deepEqual(
      all.map((c) => c.command).filter((c) => !classified(c)),
      [],
    );
    // and the one the Configuration section shows inline
    assert.match(readme, /`node --import tsx services\/<name>\/src\/main\.ts --check-config`/);
  });

  test('--check-config, as the README shows it, for every service', { timeout: 240_000 }, async () => {
    const command = /`(node [^`]*--check-config)`/.exec(readme)![1]!;
    const services = readdirSync(join(root, 'services'));
    assert.ok(services.length >= 6);
    // the one setting without a default that a service needs: the webmail's service login
    const required: Record<string, Record<string, string>> = {
      webmail: { SERVICE_LOGIN_PASSWORD: 'x'.repeat(16) },
    };
    const runs = await Promise.all(
      services.map((name) => sh(command.replace('<name>', name), required[name] ?? {})),
    );
    runs.forEach((r, i) => {
      assert.equal(r.code, 0, `${services[i]}: ${r.stderr}`);
      assert.match(r.stdout + r.stderr, /configuration is valid/, services[i]);
    });
  });

  describe('the mailyard commands', () => {
    let redis: TestRedis;
    let vhost: TestVhost;
    before(async () => {
      redis = createTestRedis();
      vhost = await createVhost();
    });
    after(async () => {
      await redis?.cleanup();
      await vhost?.delete();
    });

    /** Placeholders the README uses for a queue id, a DKIM selector or a reference: one sentence, exit 1. */
    const placeholder = /\b(ID|SELECTOR|2GvZ3HYb3hDbjfdm)$/;
    /** The prompting command: without a terminal its password comes on standard input. */
    const prompts = /user add (\S+)( --admin)?$/;

    test('each block, in order, against a prefix and vhost of its own', { timeout: 480_000 }, async () => {
      assert.ok(cliBlocks.length >= 4, `${cliBlocks.length} blocks`);
      const env = { REDIS_URL, REDIS_PREFIX: redis.prefix, AMQP_URL: vhost.url };
      for (const block of cliBlocks) {
        for (const command of block.commands) {
          if (NOT_HERE.some(([re]) => re.test(command))) continue;
          const prompt = prompts.exec(command);
          const r = prompt
            ? await sh(`${command} --password-stdin`, env, 'a long passphrase\n')
            : await sh(command, env);
          if (placeholder.test(command)) {
            assert.equal(r.code, 1, `${command}: ${r.stderr}`);
            assert.match(r.stderr, /^mailyard: [^\n]+\n$/, command);
          } else {
            assert.equal(r.code, 0, `${command}: ${r.stderr}`);
            assert.equal(r.stderr, '', command);
          }
          assert.doesNotMatch(r.stdout + r.stderr, /ELIFECYCLE|^> /m, `${command}: nothing of pnpm's`);
        }
      }
    });
  });

  describe('the try-out', () => {
    let redis: TestRedis;
    let vhost: TestVhost;
    let dns: TestDnsServer;
    const maildir = tempDir();
    const ports = new Map<string, number>();
    let platform: ReturnType<typeof spawn> | null = null;
    let output = '';

    before(async () => {
      redis = createTestRedis();
      vhost = await createVhost();
      dns = await startDnsServer({});
    });
    after(async () => {
      if (platform?.pid && platform.exitCode === null) {
        const exited = new Promise((r) => platform!.once('exit', r));
        process.kill(-platform.pid, 'SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))]);
        try {
          process.kill(-platform.pid, 'SIGKILL');
        } catch {
          // every process of the group is gone
        }
      }
      await redis?.cleanup();
      await vhost?.delete();
      await dns?.close();
      maildir.cleanup();
    });

    /** The README's try-out ports, moved to free ones (another test or a try-out may use them). */
    const local = (command: string) =>
      command
        .replace(/\b(?:2\d{3}|8443)\b/g, (p) => String(ports.get(p) ?? p))
        .replace('MAILDIR_ROOT=./data/mail', `MAILDIR_ROOT=${maildir.path}`);

    test(
      'pnpm start with the try-out settings, then the checks the README shows',
      { timeout: 480_000 },
      async () => {
        for (const p of startCommand!.command.match(/\b(?:2\d{3}|8443)\b/g) ?? [])
          ports.set(p, await freePort());
        assert.equal(ports.size, 8, 'the eight listener ports');
        platform = spawn('bash', ['-c', local(startCommand!.command)], {
          cwd: root,
          detached: true,
          env: {
            ...process.env,
            MAILYARD_CONFIG: '',
            AMQP_URL: vhost.url,
            REDIS_URL,
            REDIS_PREFIX: redis.prefix,
            DNS_SERVERS: dns.address,
            // the fixed ports `pnpm start` would otherwise take: metrics, policy delegation
            HTTP_PORT: '0',
            POLICY_DELEGATION_PORT: '0',

            LOG_LEVEL: 'info',
          },
        });
        platform.stdout!.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-20_000)));
        platform.stderr!.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-20_000)));
        // ready: every service said so in its one line, and its /readyz (broker and Redis) says so
        const metricsPorts = await waitFor(
          () => {
            if (platform!.exitCode !== null) throw new Error(`pnpm start exited:\n${output}`);
            const plain = output.replace(/\x1b\[[0-9;]*m/g, '');
            const found = [...plain.matchAll(/\(([\w-]+)\): \1 ready \{.*"metrics":(\d+)[,}]/g)];
            return found.length >= 6 ? found.map((m) => Number(m[2])) : null;
          },
          { timeoutMs: 300_000, intervalMs: 250, what: 'six services started' },
        );
        for (const port of metricsPorts)
          await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).ok, {
            timeoutMs: 60_000,
            what: `readyz on ${port}`,
          });

        const env = { REDIS_URL, REDIS_PREFIX: redis.prefix, AMQP_URL: vhost.url };
        const shown = (r: Run) => /^\* STATUS "?INBOX"? \(MESSAGES 1 UNSEEN 1\)/m.test(r.stdout);
        let statusShown = false;
        for (const command of tryOutBlock!.commands) {
          // curl -u USER asks for the password; with no terminal it reads standard input
          const run = async () => {
            const r = await sh(local(command), env, 'a long passphrase\n');
            assert.equal(r.code, 0, `${local(command)}\n${r.stderr}\n${output.slice(-4000)}`);
            return r;
          };
          if (!/\bSTATUS INBOX\b/.test(command)) {
            await run();
            continue;
          }
          // delivery files the message a moment after port 25's 250: a user who runs the
          // STATUS command at once and sees nothing yet runs it again
          statusShown = await waitFor(async () => shown(await run()), {
            timeoutMs: 60_000,
            intervalMs: 500,
            what: 'the message sent to port 25 in INBOX',
          });
        }
        assert.ok(statusShown, 'the try-out shows the message sent to port 25 in INBOX');
        // and the one submitted with Python arrives too (in new/, or in cur/ once numbered)
        const inbox = join(maildir.path, 'example.org', 'alice');
        await waitFor(() => maildirMessages(inbox).length === 2, {
          timeoutMs: 60_000,
          what: 'both messages delivered',
        });
      },
    );
  });
});
