// RETRIEVAL_WORKERS: one instance as a primary and two workers sharing the listeners
// (node:cluster hands out connections in turn, so consecutive clients land on different
// workers). What one process used to keep for itself must hold for the instance.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { waitFor } from '@mailyard/testkit';
import {
  freePort,
  startProcessTestbed,
  type ProcessTestbed,
  type ServiceProcess,
} from '../../../test/processes.js';
import { RawImap } from './raw-imap.js';

const PASSWORD = 'correct horse battery staple';
const GRACE_MS = 3000;
let bed: ProcessTestbed;
let svc: ServiceProcess;
let imap: number;
let pop3: number;

before(async () => {
  bed = await startProcessTestbed('workers.test', ['user@workers.test', 'pop@workers.test'], {
    SHUTDOWN_GRACE: `${GRACE_MS}ms`,
  });
  [imap, pop3] = [await freePort(), await freePort()];
  svc = await bed.start('retrieval', {
    RETRIEVAL_WORKERS: '2',
    IMAP_PORT: String(imap),
    IMAPS_PORT: String(await freePort()),
    POP3_PORT: String(pop3),
    POP3S_PORT: String(await freePort()),
    PLAINTEXT_AUTH_NETWORKS: '127.0.0.1/32',
    // loopback is spared by default: here it is the client the limit applies to (an
    // empty variable counts as unset, so another network stands in)
    MAIL_IP_LIMIT_EXCEPTIONS: '192.0.2.0/24',
    MAIL_MAX_IP_CONNECTIONS: '6',
    MAIL_MAX_IP_CONNECTION_RATE: '0',
  });
});
after(() => bed?.close());

async function login(user = 'user@workers.test'): Promise<RawImap> {
  const c = await RawImap.connect(imap);
  await c.until(/^\* OK/m);
  assert.match(await c.cmd('l', `LOGIN ${user} "${PASSWORD}"`, 15_000), /^l OK/m);
  return c;
}

test('a change made on one worker wakes IDLE sessions on every worker', { timeout: 60_000 }, async () => {
  // two in a row: one on each worker
  const idlers = [await login(), await login()];
  try {
    for (const c of idlers) {
      assert.match(await c.cmd('s', 'SELECT INBOX'), /^s OK/m);
      c.send('i IDLE\r\n');
      await c.until(/^\+ idling/m);
    }
    const writer = await login();
    const msg = 'Subject: across workers\r\n\r\nhello\r\n';
    writer.send(`a APPEND INBOX {${msg.length}+}\r\n${msg}\r\n`);
    assert.match(await writer.until(/^a (OK|NO|BAD)/m), /^a OK/m);
    writer.close();
    for (const c of idlers) assert.match(await c.until(/^\* 1 EXISTS/m, 10_000), /EXISTS/);
  } finally {
    for (const c of idlers) c.close();
  }
});

test(
  'connections from one address are counted for the instance, not per worker',
  { timeout: 60_000 },
  async () => {
    const open: RawImap[] = [];
    try {
      // 6 allowed (three on each worker); each alone would take 6 more
      for (let i = 0; i < 6; i++) {
        const c = await RawImap.connect(imap);
        await c.until(/^\* OK/m);
        open.push(c);
      }
      for (let i = 0; i < 2; i++) {
        const c = await RawImap.connect(imap);
        assert.match(await c.until(/^\* BYE/m), /^\* BYE \[UNAVAILABLE\] Too many connections/m);
        await c.waitClosed();
      }
      // a slot given back on one worker can be taken on the other
      open.pop()!.close();
      await waitFor(
        async () => {
          const c = await RawImap.connect(imap);
          const first = await c.until(/^\* (OK|BYE)/m);
          if (/^\* OK/m.test(first)) {
            open.push(c);
            return true;
          }
          c.close();
          return false;
        },
        { what: 'a freed slot taken again' },
      );
    } finally {
      for (const c of open) c.close();
    }
  },
);

test('one POP3 session per mailbox across workers', { timeout: 60_000 }, async () => {
  const pops: RawImap[] = [];
  try {
    const outs: string[] = [];
    for (let i = 0; i < 2; i++) {
      const c = await RawImap.connect(pop3);
      pops.push(c);
      await c.until(/^\+OK/m);
      c.send('USER pop@workers.test\r\n');
      await c.until(/^\+OK/m);
      c.send(`PASS ${PASSWORD}\r\n`);
      outs.push(await c.until(/^(\+OK|-ERR)/m, 15_000));
    }
    assert.match(outs[0]!, /^\+OK/m);
    assert.match(outs[1]!, /^-ERR \[IN-USE\]/m);
  } finally {
    for (const c of pops) c.close();
  }
});

test('/metrics adds up the workers; /readyz answers for the instance', { timeout: 60_000 }, async () => {
  assert.equal((await svc.readyz()).status, 200);
  const text = await (await fetch(`http://127.0.0.1:${svc.httpPort}/metrics`)).text();
  const m = /^mailyard_retrieval_sessions_total\{protocol="imap"\} (\d+)/m.exec(text);
  assert.ok(m, text.slice(0, 2000));
  // every IMAP session above (3 + 6 + 1), whichever worker took it
  assert.ok(Number(m[1]) >= 10, m[0]);
});

test('SIGTERM: the workers say BYE and the instance exits in time', { timeout: 60_000 }, async () => {
  const idlers = [await login(), await login()];
  for (const c of idlers) {
    assert.match(await c.cmd('s', 'SELECT INBOX'), /^s OK/m);
    c.send('i IDLE\r\n');
    await c.until(/^\+ idling/m);
  }
  const end = svc.terminate();
  for (const c of idlers) assert.match(await c.until(/^\* BYE/m, GRACE_MS), /^\* BYE \[UNAVAILABLE\] /m);
  const { code, signal, ms } = await end;
  assert.deepEqual({ code, signal }, { code: 0, signal: null }, svc.output());
  assert.ok(ms < GRACE_MS + 5000, `exited ${ms} ms after SIGTERM`);
});
