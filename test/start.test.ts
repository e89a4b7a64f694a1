// `pnpm start` (scripts/start.mjs) runs every service as a process in the foreground;
// Ctrl-C in the terminal must stop them all, clients connected or not, and leave no
// process behind holding a port.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { after, before, test } from 'node:test';
import { processAlive as alive, waitFor } from '@mailyard/testkit';
import { RawImap } from '../services/retrieval/test/raw-imap.js';
import { freePort, startProcessTestbed, type ProcessTestbed } from './processes.js';

const root = new URL('..', import.meta.url).pathname;
const GRACE_MS = 3000;

let bed: ProcessTestbed;
before(async () => {
  bed = await startProcessTestbed('start.test', ['user@start.test']);
});
after(() => bed.close());

/** Every process below `pid`, at this moment. */
function descendants(pid: number): number[] {
  const rows = execFileSync('ps', ['-e', '-o', 'pid=,ppid='], { encoding: 'utf8' })
    .trim()
    .split('\n')
    .map((l) => l.trim().split(/\s+/).map(Number) as [number, number]);
  const found: number[] = [];
  const walk = (parent: number) => {
    for (const [p, pp] of rows)
      if (pp === parent) {
        found.push(p);
        walk(p);
      }
  };
  walk(pid);
  return found;
}

const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

test(
  'Ctrl-C with an IMAP client in IDLE: every service stops, nothing is left behind',
  { timeout: 90_000 },
  async () => {
    const [imap, smtp] = [await freePort(), await freePort()];
    const start = spawn('pnpm', ['--silent', 'start'], {
      cwd: root,
      env: {
        ...process.env,
        ...bed.env,
        SERVICES: 'retrieval,mta-inbound',
        HTTP_PORT: '0',
        LISTEN_ADDRESS: '127.0.0.1',
        LOG_LEVEL: 'info',
        SHUTDOWN_GRACE: `${GRACE_MS}ms`,
        IMAP_PORT: String(imap),
        IMAPS_PORT: String(await freePort()),
        POP3_PORT: String(await freePort()),
        POP3S_PORT: String(await freePort()),
        SMTP_PORT: String(smtp),
        PLAINTEXT_AUTH_NETWORKS: '127.0.0.1/32',
      },
      // a process group of its own, as a shell gives a foreground job: Ctrl-C signals it all
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    start.stdout.on('data', (d: Buffer) => (out += d.toString()));
    start.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => start.once('exit', (code) => r(code)));
    const pid = start.pid!;
    try {
      await waitFor(async () => (await listening(imap)) && (await listening(smtp)), {
        timeoutMs: 45_000,
        what: 'retrieval and mta-inbound listening',
      });
      const client = await RawImap.connect(imap);
      await client.until(/^\* OK/m);
      assert.match(await client.cmd('a', 'LOGIN user@start.test "correct horse battery staple"'), /^a OK/m);
      assert.match(await client.cmd('b', 'SELECT INBOX'), /^b OK/m);
      client.send('c IDLE\r\n');
      await client.until(/^\+ idling/m);
      const procs = descendants(pid);
      assert.ok(procs.length >= 4, `two services and their log formatters: ${procs.join(' ')}`);

      const signalled = Date.now();
      process.kill(-pid, 'SIGINT');
      assert.match(await client.until(/^\* BYE/m), /^\* BYE \[UNAVAILABLE\] /m);
      assert.equal(await exited, 0, out);
      // the log formatters outlived the Ctrl-C: each service's shutdown is on the terminal
      // (retrieval's workers each say so: count services, not lines)
      const stopping = new Set([...out.matchAll(/\(([\w-]+)\):\S* *\S*shutting down/g)].map((m) => m[1]));
      assert.deepEqual([...stopping].sort(), ['mta-inbound', 'retrieval'], out);
      assert.ok(Date.now() - signalled < GRACE_MS + 2000, `pnpm start took ${Date.now() - signalled} ms`);
      await waitFor(() => procs.every((p) => !alive(p)), {
        timeoutMs: 5000,
        what: `no process left (${procs.filter(alive).join(' ')})`,
      });
      assert.equal(await listening(imap), false, 'the IMAP port is free');
    } finally {
      for (const p of [pid, ...descendants(pid)]) if (alive(p)) process.kill(p, 'SIGKILL');
    }
  },
);

test('pnpm start without RabbitMQ and Redis names what to install and exits 1', { timeout: 60_000 }, () => {
  const r = spawnSync(process.execPath, ['scripts/start.mjs'], {
    cwd: root,
    env: { ...process.env, AMQP_URL: 'amqp://guest:secret@127.0.0.1:1', REDIS_URL: 'redis://127.0.0.1:1' },
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(r.status, 1, r.stderr);
  assert.equal(
    r.stderr,
    'mailyard: RabbitMQ is unreachable at amqp://guest:***@127.0.0.1:1 (install and start rabbitmq-server, or set AMQP_URL)\n' +
      'mailyard: Redis is unreachable at redis://127.0.0.1:1 (install and start redis-server, or set REDIS_URL)\n',
  );
});
