// One mailbox open on two workers (RETRIEVAL_WORKERS=2): what a session changes in one
// process reaches the session in the other as it would in one process, at its next
// command and in IDLE (RFC 9051 §7: untagged EXPUNGE, FETCH and EXISTS), and UIDs
// assigned by both at once stay unique and ascending under one UIDVALIDITY (§2.3.1.1).
// Which worker holds a connection is read from /proc, not assumed from the order of
// connections.
import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { after, before, test } from 'node:test';
import type { ImapFlow } from 'imapflow';
import { folderDir } from '@mailyard/mailstore';
import { waitFor } from '@mailyard/testkit';
import { startProcessTestbed, type ProcessTestbed, type ServiceProcess } from '../../../test/processes.js';
import { plainImapFlow, serverTcpRow, startTwoWorkers } from './loopback.js';

const USER = 'shared@workers-mailbox.test';
/** An account whose INBOX both workers open for the first time at once. */
const FRESH = 'fresh@workers-mailbox.test';
let bed: ProcessTestbed;
let svc: ServiceProcess;
let imap: number;

before(async () => {
  bed = await startProcessTestbed('workers-mailbox.test', [USER, FRESH]);
  ({ svc, imap } = await startTwoWorkers(bed, { MAIL_MAX_IP_CONNECTION_RATE: '0' }));
});
after(() => bed?.close());

/** The worker processes: the children of the instance's primary. */
async function workerPids(): Promise<number[]> {
  const primary = svc.child.pid!;
  const pids: number[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const stat = await readFile(`/proc/${d}/stat`, 'latin1').catch(() => '');
    // pid (comm) state ppid ...: comm may hold spaces, so read past its closing parenthesis
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === primary) pids.push(Number(d));
  }
  return pids;
}

/** The worker holding the server's end of a client's connection. */
async function workerOf(client: ImapFlow): Promise<number> {
  // ImapFlow keeps its socket but does not declare it
  const { socket } = client as unknown as { socket: Socket };
  const row = await serverTcpRow(imap, socket.localPort!);
  assert.ok(row, 'the server end of the connection is in /proc/net/tcp');
  const inode = row[9];
  for (const pid of await workerPids()) {
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [])) {
      const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      if (link === `socket:[${inode}]`) return pid;
    }
  }
  throw new Error(`no worker holds socket ${inode}`);
}

// IDLE only when a test asks for it, so a NOOP is the next command
const client = (user: string) => plainImapFlow(imap, user, { disableAutoIdle: true });

/**
 * Two clients of one user on different workers: node:cluster hands connections out in
 * turn, but that is checked, and a third connection taken when two landed together.
 */
async function onTwoWorkers(user = USER): Promise<{ a: ImapFlow; b: ImapFlow; close: () => Promise<void> }> {
  const open: ImapFlow[] = [];
  const close = async () => {
    for (const c of open) await c.logout().catch(() => c.close());
  };
  const a = client(user);
  await a.connect();
  open.push(a);
  const wa = await workerOf(a);
  for (let i = 0; i < 4; i++) {
    const b = client(user);
    await b.connect();
    open.push(b);
    if ((await workerOf(b)) !== wa) return { a, b, close };
  }
  await close();
  throw new Error('every connection landed on one worker');
}

const message = (subject: string) =>
  Buffer.from(`From: a@example.test\r\nSubject: ${subject}\r\n\r\nbody\r\n`);

/** Untagged updates an ImapFlow client reports, in order. */
function updates(c: ImapFlow): string[] {
  const seen: string[] = [];
  c.on('exists', (e: { count: number }) => seen.push(`EXISTS ${e.count}`));
  c.on('expunge', (e: { seq?: number; uid?: number }) => seen.push(`EXPUNGE ${e.seq ?? `uid ${e.uid}`}`));
  c.on('flags', (e: { seq: number; flags: Set<string> }) =>
    seen.push(`FLAGS ${e.seq} ${[...e.flags].sort().join(' ')}`),
  );
  return seen;
}

test(
  'an expunge, a flag change and a new message on one worker reach the other at its next command',
  { timeout: 120_000 },
  async () => {
    const { a, b, close } = await onTwoWorkers();
    try {
      await a.append('INBOX', message('one'));
      await a.append('INBOX', message('two'));
      await a.mailboxOpen('INBOX');
      await b.mailboxOpen('INBOX');
      const validity = b.mailbox && b.mailbox.uidValidity;
      const seen = updates(b);

      await a.messageFlagsAdd('2', ['\\Flagged']);
      await b.noop();
      assert.deepEqual(seen.splice(0), ['FLAGS 2 \\Flagged'], 'a flag set on the other worker');

      await a.append('INBOX', message('three'));
      await b.noop();
      assert.deepEqual(seen.splice(0), ['EXISTS 3'], 'a message appended on the other worker');

      await a.messageDelete('1');
      await b.noop();
      assert.deepEqual(seen.splice(0), ['EXPUNGE 1'], 'an expunge on the other worker');

      // a file another delivery agent left in new/: found at the next command of each
      const dropped = message('dropped');
      const name = `${Date.now()}.M1P1.workers-mailbox,S=${dropped.length}`;
      await writeFile(join(folderDir(bed.maildir, USER, 'INBOX'), 'new', name), dropped);
      await b.noop();
      assert.deepEqual(seen.splice(0), ['EXISTS 3'], 'a message delivered to the Maildir');
      await a.noop();
      assert.equal(a.mailbox && a.mailbox.exists, 3);

      const listA = await a.fetchAll('1:*', { uid: true });
      const listB = await b.fetchAll('1:*', { uid: true, flags: true });
      assert.deepEqual(
        listB.map((m) => m.uid),
        listA.map((m) => m.uid),
      );
      assert.deepEqual(
        listB.map((m) => [...(m.flags ?? [])].filter((f) => f !== '\\Recent')),
        [['\\Flagged'], [], []],
      );
      assert.equal(b.mailbox && b.mailbox.uidValidity, validity);
    } finally {
      await close();
    }
  },
);

test('changes on one worker reach a session idling on the other', { timeout: 120_000 }, async () => {
  const { a, b, close } = await onTwoWorkers();
  try {
    await a.mailboxOpen('INBOX');
    const before = a.mailbox ? a.mailbox.exists : 0;
    await b.mailboxOpen('INBOX');
    const seen = updates(b);
    const idle = b.idle();
    await waitFor(() => (b as unknown as { idling: boolean }).idling, { what: 'b idling' });

    await a.append('INBOX', message('idle new'));
    await waitFor(() => seen.includes(`EXISTS ${before + 1}`), { what: 'EXISTS in IDLE', timeoutMs: 10_000 });
    await a.noop();
    await a.messageFlagsAdd(String(before + 1), ['\\Answered']);
    await waitFor(() => seen.some((s) => s.startsWith(`FLAGS ${before + 1} \\Answered`)), {
      what: 'FETCH FLAGS in IDLE',
      timeoutMs: 10_000,
    });
    await a.messageDelete(String(before + 1));
    await waitFor(() => seen.includes(`EXPUNGE ${before + 1}`), {
      what: 'EXPUNGE in IDLE',
      timeoutMs: 10_000,
    });
    await b.noop();
    await idle;
  } finally {
    await close();
  }
});

test(
  'APPENDs from both workers at once get unique, ascending UIDs under one UIDVALIDITY',
  { timeout: 180_000 },
  async () => {
    const { a, b, close } = await onTwoWorkers();
    const PER_CLIENT = 25;
    try {
      await a.mailboxCreate('Concurrent');
      const status = await b.status('Concurrent', { uidValidity: true, uidNext: true });
      assert.ok(status && status.uidValidity !== undefined && status.uidNext !== undefined);
      const start = { uidValidity: status.uidValidity, uidNext: status.uidNext };
      const run = async (c: ImapFlow, tag: string) => {
        const uids: number[] = [];
        for (let i = 0; i < PER_CLIENT; i++) {
          const res = await c.append('Concurrent', message(`${tag} ${i}`));
          assert.ok(res && res.uid, 'APPENDUID');
          assert.equal(BigInt(res.uidValidity!), BigInt(start.uidValidity));
          uids.push(res.uid);
        }
        return uids;
      };
      const [ua, ub] = await Promise.all([run(a, 'a'), run(b, 'b')]);
      for (const uids of [ua, ub])
        assert.deepEqual(
          uids,
          [...uids].sort((x, y) => x - y),
          'each client sees its UIDs rise',
        );
      const all = [...ua, ...ub];
      assert.equal(new Set(all).size, 2 * PER_CLIENT, 'no UID given twice');
      assert.ok(Math.min(...all) >= start.uidNext, 'no UID below the UIDNEXT before');

      // both workers list the same messages, in UID order, under the same UIDVALIDITY
      const lists: number[][] = [];
      for (const c of [a, b]) {
        await c.mailboxOpen('Concurrent');
        assert.equal(BigInt(c.mailbox ? c.mailbox.uidValidity : 0), BigInt(start.uidValidity));
        const got = (await c.fetchAll('1:*', { uid: true })).map((m) => m.uid);
        lists.push(got);
      }
      assert.deepEqual(
        lists[0],
        [...all].sort((x, y) => x - y),
      );
      assert.deepEqual(lists[1], lists[0]);
    } finally {
      await close();
    }
  },
);

test(
  'two workers opening a folder nobody numbered yet agree on its UIDVALIDITY and UIDs',
  { timeout: 120_000 },
  async () => {
    // messages another delivery agent left, no dovecot-uidlist yet: the first SELECT numbers them
    const dir = folderDir(bed.maildir, FRESH, 'INBOX');
    for (const sub of ['new', 'cur', 'tmp']) await mkdir(join(dir, sub), { recursive: true });
    for (let i = 0; i < 30; i++) {
      const m = message(`seeded ${i}`);
      await writeFile(join(dir, 'new', `${1_700_000_000 + i}.M${i}P1.seed,S=${m.length}`), m);
    }
    const { a, b, close } = await onTwoWorkers(FRESH);
    try {
      await Promise.all([a.mailboxOpen('INBOX'), b.mailboxOpen('INBOX')]);
      assert.equal(String(a.mailbox && a.mailbox.uidValidity), String(b.mailbox && b.mailbox.uidValidity));
      const [la, lb] = await Promise.all([
        a.fetchAll('1:*', { uid: true }),
        b.fetchAll('1:*', { uid: true }),
      ]);
      const ua = la.map((m) => m.uid);
      assert.equal(ua.length, 30);
      assert.equal(new Set(ua).size, 30);
      assert.deepEqual(
        lb.map((m) => m.uid),
        ua,
      );
    } finally {
      await close();
    }
  },
);
