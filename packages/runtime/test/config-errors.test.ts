// A setting that only building the service can judge (a certificate file that cannot be
// read, two settings that must go together) stops the service as a bad value does: one
// line naming the key, exit 78 (EX_CONFIG), no stack trace; with workers (retrieval), the
// instance stops too rather than forking workers that fail the same way for ever.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { entryArgs, freePort } from '@mailyard/testkit';

const root = new URL('../../..', import.meta.url).pathname;

/** Runs a service's main.ts until it exits (or `timeoutMs`), with nothing listening on the broker and Redis ports. */
async function runService(service: string, env: Record<string, string>, timeoutMs = 60_000) {
  const nobody = await freePort();
  const child = spawn(process.execPath, entryArgs(`services/${service}`), {
    cwd: root,
    env: {
      PATH: process.env.PATH ?? '',
      AMQP_URL: `amqp://guest:guest@127.0.0.1:${nobody}`,
      REDIS_URL: `redis://127.0.0.1:${nobody}`,
      HTTP_PORT: '0',
      LISTEN_ADDRESS: '127.0.0.1',
      MYHOSTNAME: 'mx.config-errors.test',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once('exit', (c, s) => resolve([c, s])),
  );
  clearTimeout(timer);
  return { code, signal, stdout, stderr };
}

const noStack = (out: string) => assert.doesNotMatch(out, /\n\s+at |"stack"/, out);

test(
  'a certificate without its key: one line naming TLS_KEY_FILE, exit 78',
  { timeout: 90_000 },
  async () => {
    const r = await runService('mta-inbound', { SMTP_PORT: '0', TLS_CERT_FILE: '/etc/hostname' });
    assert.equal(r.code, 78, r.stderr + r.stdout);
    assert.deepEqual(r.stderr.trim().split('\n'), [
      'mta-inbound: config error: TLS_KEY_FILE: both TLS_CERT_FILE and TLS_KEY_FILE must be set',
    ]);
    noStack(r.stdout + r.stderr);
  },
);

test(
  'a certificate file that cannot be read: one line naming the key and the file, exit 78',
  { timeout: 90_000 },
  async () => {
    const r = await runService('msa', {
      SUBMISSION_PORT: '0',
      SUBMISSIONS_PORT: '0',
      TLS_CERT_FILE: '/nonexistent/cert.pem',
      TLS_KEY_FILE: '/nonexistent/key.pem',
    });
    assert.equal(r.code, 78, r.stderr + r.stdout);
    assert.deepEqual(r.stderr.trim().split('\n'), [
      'msa: config error: TLS_CERT_FILE: cannot read /nonexistent/cert.pem: ENOENT',
      'msa: config error: TLS_KEY_FILE: cannot read /nonexistent/key.pem: ENOENT',
    ]);
    noStack(r.stdout + r.stderr);
  },
);

test(
  'retrieval with workers stops with exit 78 when its workers cannot start for a setting',
  { timeout: 120_000 },
  async () => {
    const r = await runService('retrieval', {
      ...Object.fromEntries(['IMAP_PORT', 'IMAPS_PORT', 'POP3_PORT', 'POP3S_PORT'].map((k) => [k, '0'])),
      RETRIEVAL_WORKERS: '2',
      MAILDIR_ROOT: '/nonexistent/mail',
      TLS_CERT_FILE: '/nonexistent/cert.pem',
      TLS_KEY_FILE: '/nonexistent/key.pem',
    });
    assert.equal(r.code, 78, r.stderr + r.stdout);
    // the files are read before any worker is started: said once, nothing else is said
    assert.deepEqual(r.stderr.trim().split('\n'), [
      'retrieval: config error: TLS_CERT_FILE: cannot read /nonexistent/cert.pem: ENOENT',
      'retrieval: config error: TLS_KEY_FILE: cannot read /nonexistent/key.pem: ENOENT',
    ]);
    assert.doesNotMatch(r.stdout, /worker died/);
    noStack(r.stdout + r.stderr);
  },
);

test(
  'a LISTEN_ADDRESS that does not resolve: one line naming the key, exit 78, not a stack trace',
  { timeout: 90_000 },
  async () => {
    const r = await runService('delivery', { LISTEN_ADDRESS: 'nowhere.invalid' });
    assert.equal(r.code, 78, r.stderr + r.stdout);
    assert.deepEqual(r.stderr.trim().split('\n'), [
      'delivery: config error: LISTEN_ADDRESS: nowhere.invalid does not resolve to an address',
    ]);
    noStack(r.stdout + r.stderr);
  },
);
