// `mailyard backup` and `mailyard restore` in-process: what a restore brings back is what
// was there, byte for byte (Redis values and TTLs, message files, names, mtimes), and every
// bad input is one sentence and exit 1 with nothing written. Reading the restored mail
// over IMAP is test/backup.test.ts.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test, type TestContext } from 'node:test';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { MailAccount } from '@mailyard/mailstore';
import { Redis } from 'ioredis';
import { REDIS_URL, tempDir } from '@mailyard/testkit';
import { GOOD_PASSWORD, cliHarness, type CliHarness } from './harness.js';

const TIMEOUT = { timeout: 60_000 };

/** A harness with a Maildir root of its own, passed as MAILDIR_ROOT. */
function platform(t: TestContext): CliHarness & { maildir: string; env: NodeJS.ProcessEnv } {
  const cli = cliHarness(t);
  const dir = tempDir();
  t.after(() => dir.cleanup());
  const env = { REDIS_URL, REDIS_PREFIX: cli.prefix, MAILDIR_ROOT: dir.path };
  return {
    ...cli,
    maildir: dir.path,
    env,
    run: (argv, opts = {}) => cli.run(argv, { env, ...opts }),
    ok: (argv, opts = {}) => cli.ok(argv, { env, ...opts }),
  };
}

/** Every key under a prefix: its type, value and whether it expires. */
async function redisContent(prefix: string): Promise<Map<string, string>> {
  const redis = new Redis(REDIS_URL);
  try {
    const out = new Map<string, string>();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      for (const k of keys) {
        const type = await redis.type(k);
        const value =
          type === 'string'
            ? await redis.get(k)
            : type === 'hash'
              ? Object.entries(await redis.hgetall(k)).sort()
              : type === 'set'
                ? (await redis.smembers(k)).sort()
                : type === 'list'
                  ? await redis.lrange(k, 0, -1)
                  : await redis.zrange(k, 0, -1, 'WITHSCORES');
        out.set(k.slice(prefix.length), `${type} ${JSON.stringify(value)} ${(await redis.pttl(k)) > 0}`);
      }
      cursor = next;
    } while (cursor !== '0');
    return out;
  } finally {
    redis.disconnect();
  }
}

/** Every file under a root: relative path -> content and mtime (tar keeps whole seconds). */
function files(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else
        out.set(relative(root, p), `${readFileSync(p, 'base64')} ${Math.floor(statSync(p).mtimeMs / 1000)}`);
    }
  };
  walk(root);
  return out;
}

/** A platform with a domain (DKIM keys), an account, an alias and mail in two folders. */
async function populate(p: ReturnType<typeof platform>): Promise<void> {
  await p.ok(['domain', 'add', 'example.org']);
  await p.ok(['user', 'add', 'alice@example.org', '--password-stdin'], { input: GOOD_PASSWORD });
  await p.ok(['alias', 'add', 'postmaster@example.org', 'alice@example.org']);
  const account = new MailAccount(p.maildir, 'alice@example.org');
  await account.ensureDefaults();
  const date = new Date('2025-01-06T10:00:00Z');
  await account
    .folder('INBOX')
    .append(Buffer.from('Subject: one\r\n\r\nfirst\r\n'), ['\\Seen', '$Work'], date);
  await account.folder('INBOX').append(Buffer.from('Subject: two\r\n\r\nsecond\r\n'), ['\\Flagged'], date);
  await account.folder('Archive').append(Buffer.from('Subject: old\r\n\r\nold\r\n'), [], date);
}

test('backup then restore into an empty platform brings back every key and file', TIMEOUT, async (t) => {
  const a = platform(t);
  await populate(a);
  const archive = join(tempDir().path, 'platform.tar.gz');
  const out = await a.ok(['backup', archive]);
  assert.match(out, /^backed up \d+ Redis keys, 1 mailbox, 6 folders, 3 messages \(\d+ bytes\) to \S+\n/);
  assert.match(out, /password hashes and DKIM private keys.*mode 0600/);
  assert.equal(statSync(archive).mode & 0o777, 0o600);

  const b = platform(t);
  const restored = await b.ok(['restore', archive]);
  assert.match(
    restored,
    /^restored \d+ Redis keys, 1 mailbox, 6 folders, 3 messages \(\d+ bytes\) from \S+ \(made \S+ on \S+\)\n$/,
  );

  // the audit log gained one entry on each side: what the restore brought is the backup's
  const [before, after] = [await redisContent(a.prefix), await redisContent(b.prefix)];
  before.delete('audit:log');
  after.delete('audit:log');
  after.delete('policy:version');
  before.delete('policy:version');
  assert.deepEqual(after, before);
  assert.deepEqual(files(b.maildir), files(a.maildir));
  assert.ok(await b.directory.authenticate('alice@example.org', GOOD_PASSWORD));
  // the backup's own entry is written after the copy; the restore's on top of the copy's log
  assert.match(await a.ok(['audit', '-n', '1']), /\tbackup\.create\t/);
  const audit = (await b.ok(['audit', '-n', '2'])).split('\n');
  assert.match(audit[0]!, /\tbackup\.restore\t/);
  assert.match(audit[1]!, /\talias\.add\t/);
});

test('a backup where MAILDIR_ROOT does not exist says so', TIMEOUT, async (t) => {
  const a = platform(t);
  const dir = tempDir();
  t.after(() => dir.cleanup());
  const archive = join(dir.path, 'a.tar.gz');
  const out = await a.ok(['backup', archive], { env: { ...a.env, MAILDIR_ROOT: join(dir.path, 'nowhere') } });
  assert.match(out, /0 mailboxes.* \(there is no \S+nowhere: set MAILDIR_ROOT to the mail store's\)\n/);
});

test('backup refuses to overwrite a file, and leaves nothing when it cannot write', TIMEOUT, async (t) => {
  const a = platform(t);
  const dir = tempDir();
  t.after(() => dir.cleanup());
  const existing = join(dir.path, 'old.tar.gz');
  writeFileSync(existing, 'keep me');
  assert.deepEqual(await a.run(['backup', existing]), {
    code: 1,
    stdout: '',
    stderr: `mailyard: ${existing} already exists; choose another name or remove it first\n`,
  });
  assert.equal(readFileSync(existing, 'utf8'), 'keep me');
  const nowhere = join(dir.path, 'missing', 'x.tar.gz');
  const r = await a.run(['backup', nowhere]);
  assert.deepEqual([r.code, r.stderr], [1, `mailyard: cannot write ${nowhere} (ENOENT)\n`]);
  assert.deepEqual(readdirSync(dir.path), ['old.tar.gz']);
  // what a backup killed part way leaves is named, and left alone
  const cut = join(dir.path, '.new.tar.gz.partial');
  writeFileSync(cut, 'half');
  const r2 = await a.run(['backup', join(dir.path, 'new.tar.gz')]);
  assert.deepEqual(
    [r2.code, r2.stderr],
    [
      1,
      `mailyard: ${cut} exists: another backup to ${join(dir.path, 'new.tar.gz')} is running, or one was cut short (remove it then)\n`,
    ],
  );
  assert.equal(readFileSync(cut, 'utf8'), 'half');
});

/** `bytes` with the byte at `at` inverted. */
function flip(bytes: Buffer, at: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[at] = copy[at]! ^ 0xff;
  return copy;
}

/** A tar archive of the given entries, gzip-compressed. */
async function archiveOf(entries: [string, string][]): Promise<Buffer> {
  const p = pack();
  for (const [name, body] of entries) p.entry({ name }, body);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return gzipSync(Buffer.concat(chunks));
}

test('restore refuses bad archives with one sentence, changing nothing', TIMEOUT, async (t) => {
  const a = platform(t);
  await populate(a);
  const dir = tempDir();
  t.after(() => dir.cleanup());
  const good = join(dir.path, 'good.tar.gz');
  await a.ok(['backup', good]);
  const bytes = readFileSync(good);
  const manifest = JSON.stringify({ format: 'mailyard-backup', version: 1 });
  const cases: [string, Buffer | null, RegExp][] = [
    ['missing.tar.gz', null, /^mailyard: \S+missing\.tar\.gz does not exist\n$/],
    [
      'text.tar.gz',
      Buffer.from('hello, this is not an archive\n'),
      /^mailyard: \S+ is not a readable backup \([^)]+\)\n$/,
    ],
    ['empty.tar.gz', Buffer.alloc(0), /^mailyard: \S+ is not a backup archive \(it holds no entries\)\n$/],
    [
      'cut.tar.gz',
      bytes.subarray(0, Math.floor(bytes.length / 2)),
      /^mailyard: \S+ is (not a readable backup|incomplete) \([^)]+\)\n$/,
    ],
    [
      'flipped.tar.gz',
      flip(bytes, Math.floor(bytes.length / 2)),
      /^mailyard: \S+ is (not a readable backup|corrupt) \([^)]+\)\n$/,
    ],
    [
      'foreign.tar.gz',
      await archiveOf([['etc/passwd', 'root:x:0:0']]),
      /^mailyard: \S+ is not a Mailyard backup \(it has no manifest\)\n$/,
    ],
    [
      'future.tar.gz',
      await archiveOf([['manifest.json', JSON.stringify({ format: 'mailyard-backup', version: 2 })]]),
      /^mailyard: \S+ is a backup of format version 2; this mailyard reads version 1\n$/,
    ],
    [
      'escape.tar.gz',
      await archiveOf([
        ['manifest.json', manifest],
        ['redis.jsonl', ''],
        ['maildir/../../etc/cron.d/x', 'boom'],
      ]),
      /^mailyard: \S+ is corrupt \(it holds "maildir\/\.\.\/\.\.\/etc\/cron\.d\/x", which is no Maildir file\)\n$/,
    ],
    [
      'noend.tar.gz',
      await archiveOf([
        ['manifest.json', manifest],
        ['redis.jsonl', ''],
      ]),
      /^mailyard: \S+ is incomplete \(its end is missing: the backup was cut short\)\n$/,
    ],
  ];
  const b = platform(t);
  for (const [name, content, expected] of cases) {
    const path = join(dir.path, name);
    if (content) writeFileSync(path, content);
    const r = await b.run(['restore', path]);
    assert.equal(r.code, 1, `${name}: ${r.stderr}`);
    assert.equal(r.stdout, '', name);
    assert.match(r.stderr, expected, name);
  }
  assert.deepEqual(await redisContent(b.prefix), new Map(), 'no key was written');
  assert.deepEqual(readdirSync(b.maildir), [], 'no file was written');
});

test('restore refuses a platform that holds data unless --force', TIMEOUT, async (t) => {
  const a = platform(t);
  await populate(a);
  const dir = tempDir();
  t.after(() => dir.cleanup());
  const archive = join(dir.path, 'a.tar.gz');
  await a.ok(['backup', archive]);

  const b = platform(t);
  await b.ok(['domain', 'add', 'other.test', '--no-dkim']);
  const r = await b.run(['restore', archive]);
  assert.deepEqual(r, {
    code: 1,
    stdout: '',
    stderr: `mailyard: the platform is not empty (Redis has keys under the prefix "${b.prefix}"); restore into an empty one, or add --force to overwrite\n`,
  });
  assert.deepEqual(await b.directory.listDomains(), ['other.test']);

  const c = platform(t);
  writeFileSync(join(c.maildir, 'stray'), '');
  const r2 = await c.run(['restore', archive]);
  assert.equal(r2.code, 1);
  assert.equal(
    r2.stderr,
    `mailyard: the platform is not empty (${c.maildir} is not empty); restore into an empty one, or add --force to overwrite\n`,
  );

  // a key of the same name is replaced whole: the set of domains is the backup's. The
  // rules' version is not: running policy services must see a version they never had
  const redis = new Redis(REDIS_URL);
  t.after(() => redis.disconnect());
  await redis.set(`${b.prefix}policy:version`, '50');
  await b.ok(['restore', '--force', archive]);
  assert.deepEqual(await b.directory.listDomains(), ['example.org']);
  assert.ok(Number(await redis.get(`${b.prefix}policy:version`)) > 50, 'the rules version went past 50');
  assert.ok(await b.directory.authenticate('alice@example.org', GOOD_PASSWORD));
});

test('backup - and restore - stream the archive through standard output and input', TIMEOUT, async (t) => {
  const a = platform(t);
  await populate(a);
  // in-process stdout is a text sink, not a stream: the command says so
  const r = await a.run(['backup', '-']);
  assert.deepEqual([r.code, r.stderr], [2, 'mailyard: standard output cannot take the archive here\n']);
  const dir = tempDir();
  t.after(() => dir.cleanup());
  const archive = join(dir.path, 'a.tar.gz');
  await a.ok(['backup', archive]);
  const b = platform(t);
  const out = await b.ok(['restore', '-'], { input: readFileSync(archive) });
  assert.match(out, /^restored .* from standard input /);
  assert.deepEqual(files(b.maildir), files(a.maildir));
  const bad = await platform(t).run(['restore', '-'], { input: 'nonsense' });
  assert.deepEqual(
    [bad.code, bad.stderr.replace(/\(.*\)/, '(...)')],
    [1, 'mailyard: standard input is not a readable backup (...)\n'],
  );
});
