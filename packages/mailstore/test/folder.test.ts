import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { heapAfterGc, tempDir } from '@mailyard/testkit';
import {
  EXPUNGES_TRIM_BYTES,
  InternalDateError,
  MailAccount,
  MailFolder,
  MaildirStore,
  MOVE_BATCH,
  accountDir,
  uniqueName,
  parseUidList,
  UIDLIST,
} from '../src/index.js';
import { parseStateFile } from '../src/folder.js';

const tmp = tempDir('mailstore-');
after(() => tmp.cleanup());
let n = 0;
const fresh = () => join(tmp.path, `r${++n}`);
/** The MODSEQ state as its file says, its change lines applied. */
const stateIn = (path: string) => parseStateFile(readFileSync(path, 'utf8'), '0:0:0').value;
const msg = (i: number) => Buffer.from(`Subject: m${i}\r\n\r\nbody ${i}\r\n`);
/**
 * A new folder of `count` messages, as two processes see it: `f`, which appended them, and
 * `other`, a MailFolder of its own on the same files that has taken its first snapshot.
 */
async function twoProcesses(count: number) {
  const dir = join(fresh(), 'a');
  const f = new MailFolder(dir, 'INBOX', 'h');
  await f.ensure();
  const date = new Date();
  await f.appendMany(Array.from({ length: count }, (_, i) => ({ data: msg(i), flags: [], date })));
  const other = new MailFolder(dir, 'INBOX', 'h');
  await other.snapshot();
  return { dir, f, other, date };
}

void describe('dovecot-uidlist', () => {
  void it('a list that grew at the end is parsed on from the last text, to what a whole read gives', () => {
    const lines = (from: number, to: number) =>
      Array.from({ length: to - from + 1 }, (_, i) => `${from + i} :17000${from + i}.M1P1.h,S=10\n`).join('');
    const before = `3 V1700000000 N6 Gabc\n${lines(1, 5)}`;
    const prev = { text: before, value: parseUidList(before) };
    const cases = {
      // an APPEND: the header's next UID moves, lines are added
      grown: `3 V1700000000 N9 Gabc\n${lines(1, 8)}`,
      // lines added without the header (as Dovecot appends them): the next UID follows them
      appended: `${before}6 :170006.M1P1.h,S=10\n`,
      // an EXPUNGE, another UIDVALIDITY, an unchanged body: read whole or the same
      shrunk: `3 V1700000000 N6 Gabc\n${lines(1, 2)}${lines(4, 5)}`,
      renumbered: `3 V1700000001 N9 Gabc\n${lines(1, 8)}`,
      same: before,
    };
    for (const [name, text] of Object.entries(cases)) {
      const whole = parseUidList(text)!;
      const on = parseUidList(text, prev)!;
      assert.deepEqual([...on.entries], [...whole.entries], name);
      assert.deepEqual({ ...on, entries: null }, { ...whole, entries: null }, name);
    }
    assert.equal(parseUidList(cases.appended, prev)!.next, 7);
    // the earlier entries are not changed by a later parse
    assert.equal(prev.value!.entries.size, 5);
  });
});

void describe('MailFolder', () => {
  void it('a folder deleted after a delivery is created again by the next one', async () => {
    const root = fresh();
    const store = new MaildirStore({ root, hostname: 'h' });
    const deliver = (i: number) =>
      store.deliver({
        account: 'a@x.test',
        folder: 'Junk',
        data: msg(i),
        queueId: `J${i}`,
        recipient: 'a@x.test',
        receivedAt: new Date(1700000000000 + i * 1000),
      });
    const first = await deliver(1);
    // the user deletes Junk over IMAP (the folder goes, the store still remembers it)
    await fs.rm(join(first.path, '..', '..'), { recursive: true });
    const second = await deliver(2);
    assert.equal(second.written, true);
    assert.equal(readFileSync(second.path, 'utf8'), msg(2).toString());
    await fs.access(join(second.path, '..', '..', 'maildirfolder'));
  });

  void it('assigns UIDs to delivered files, stable across new instances (restart)', async () => {
    const root = fresh();
    const store = new MaildirStore({ root, hostname: 'h' });
    for (let i = 0; i < 5; i++) {
      await store.deliver({
        account: 'a@x.test',
        folder: 'INBOX',
        data: msg(i),
        queueId: `Q${i}`,
        recipient: 'a@x.test',
        receivedAt: new Date(1700000000000 + i * 1000),
      });
    }
    const acct = new MailAccount(root, 'a@x.test');
    const s1 = await acct.folder('INBOX').snapshot();
    assert.deepEqual(
      s1.messages.map((m) => m.uid),
      [1, 2, 3, 4, 5],
    );
    assert.equal(s1.uidNext, 6);
    const s2 = await new MailAccount(root, 'a@x.test').folder('INBOX').snapshot();
    assert.equal(s2.validity, s1.validity);
    assert.deepEqual(
      s2.messages.map((m) => [m.uid, m.base]),
      s1.messages.map((m) => [m.uid, m.base]),
    );
    // Dovecot-readable uidlist
    const list = parseUidList(readFileSync(join(acct.folder('INBOX').dir, UIDLIST), 'utf8'))!;
    assert.equal(list.next, 6);
    assert.equal(list.entries.size, 5);
  });

  void it('keeps flags in file names and bumps MODSEQ', async () => {
    const root = fresh();
    const f = new MailFolder(join(root, 'a'), 'INBOX', 'h');
    await f.ensure();
    const { uid } = await f.append(msg(1), ['\\Seen'], new Date('2024-01-02T03:04:05Z'));
    let s = await f.snapshot();
    assert.deepEqual(s.messages[0]!.flags, ['\\Seen']);
    assert.match(s.messages[0]!.rel, /^cur\/.*:2,S$/);
    const before = s.highestModseq;
    const r = await f.store([{ uid, op: 'add', flags: ['\\Flagged', '$Junk'] }]);
    assert.equal(r.changed.length, 1);
    s = await f.snapshot();
    assert.deepEqual(new Set(s.messages[0]!.flags), new Set(['\\Seen', '\\Flagged', '$Junk']));
    assert.match(s.messages[0]!.rel, /:2,FSa$/);
    assert.ok(s.highestModseq > before);
    assert.ok(s.messages[0]!.modseq > before);
    // conditional store refused for a stale modseq
    const r2 = await f.store([{ uid, op: 'remove', flags: ['\\Seen'] }], before);
    assert.deepEqual(r2.failed, [uid]);
    assert.equal((await f.internalDate(s.messages[0]!)).toISOString(), '2024-01-02T03:04:05.000Z');
    // an external flag change (another tool renaming the file) is noticed and gets a MODSEQ
    const m = s.messages[0]!;
    await fs.rename(join(f.dir, m.rel), join(f.dir, m.rel.replace(/:2,.*$/, ':2,S')));
    const s3 = await new MailFolder(f.dir, 'INBOX', 'h').snapshot();
    assert.deepEqual(s3.messages[0]!.flags, ['\\Seen']);
    assert.ok(s3.highestModseq > s.highestModseq);
  });

  // INTERNALDATE is the file's mtime: a date in the range every filesystem keeps is not
  // read back after it is set, one outside it is, and refused where the filesystem moved it
  void it('keeps dates at both ends of the range not read back, refuses one moved', async () => {
    const f = new MailFolder(join(fresh(), 'a'), 'INBOX', 'h');
    await f.ensure();
    const dates = [
      '1969-12-31T23:59:59',
      '1970-01-01T00:00:00',
      '2037-12-31T23:59:59',
      '2038-01-01T00:00:00',
    ];
    for (const d of dates) await f.append(msg(1), [], new Date(`${d}Z`));
    const kept = await Promise.all((await f.snapshot()).messages.map((m) => f.internalDate(m)));
    assert.deepEqual(
      kept.map((d) => d.toISOString()),
      dates.map((d) => `${d}.000Z`),
    );
    const t1900 = new Date('1900-01-01T00:00:00Z');
    const probe = join(f.dir, 'time-probe');
    await fs.writeFile(probe, '');
    await fs.utimes(probe, t1900, t1900);
    if ((await fs.stat(probe)).mtime.getTime() !== t1900.getTime())
      await assert.rejects(f.append(msg(2), [], t1900), InternalDateError);
    assert.equal((await f.snapshot()).messages.length, dates.length);
  });

  // A busy folder (a state file or directory changed within the last few ms) is read
  // without listing cur/ when cur/ is as the last lock holder left it. A modification time
  // in the future keeps the folder "busy" for as long as a test runs.
  const keepBusy = (f: MailFolder) => {
    const soon = new Date(Date.now() + 3_600_000);
    return fs.utimes(join(f.dir, 'new'), soon, soon);
  };

  void it('a busy folder still notices a message file removed behind its back', async () => {
    const f = new MailFolder(join(fresh(), 'a'), 'INBOX', 'h');
    await f.ensure();
    for (let i = 0; i < 3; i++) await f.append(msg(i), [], new Date());
    const s1 = await f.snapshot();
    await keepBusy(f);
    await fs.unlink(join(f.dir, s1.messages[1]!.rel));
    const s2 = await f.snapshot();
    assert.deepEqual(
      s2.messages.map((m) => m.uid),
      [1, 3],
    );
    assert.deepEqual(await f.vanishedSince(s1.highestModseq), [2]);
  });

  void it('a busy folder sees the changes another process made under the lock', async () => {
    const dir = join(fresh(), 'a');
    const f = new MailFolder(dir, 'INBOX', 'h');
    await f.ensure();
    for (let i = 0; i < 3; i++) await f.append(msg(i), [], new Date());
    await f.snapshot();
    await keepBusy(f);
    // another process: its own MailFolder on the same files
    const other = new MailFolder(dir, 'INBOX', 'h');
    await other.store([{ uid: 2, op: 'add', flags: ['\\Flagged', '$Work'] }]);
    await other.expunge([3]);
    await other.append(msg(9), ['\\Seen'], new Date());
    const s = await f.snapshot();
    assert.deepEqual(
      s.messages.map((m) => [m.uid, m.flags.join(' ')]),
      [
        [1, ''],
        [2, '\\Flagged $Work'],
        [4, '\\Seen'],
      ],
    );
    // and this process's own next change starts from that state
    await f.store([{ uid: 1, op: 'add', flags: ['\\Answered'] }]);
    const again = await new MailFolder(dir, 'INBOX', 'h').snapshot();
    assert.deepEqual(
      again.messages.map((m) => [m.uid, m.flags.join(' ')]),
      [
        [1, '\\Answered'],
        [2, '\\Flagged $Work'],
        [4, '\\Seen'],
      ],
    );
    for (const m of again.messages) assert.ok((await f.read(m)).length > 0);
  });

  void it('a rename behind the lock that leaves cur/ as its holder saw it is seen within seconds', async () => {
    const dir = join(fresh(), 'a');
    const f = new MailFolder(dir, 'INBOX', 'h');
    await f.ensure();
    for (let i = 0; i < 3; i++) await f.append(msg(i), [], new Date());
    const s1 = await f.snapshot();
    // another process changes the folder under the lock and records cur/'s stat ...
    await new MailFolder(dir, 'INBOX', 'h').store([{ uid: 1, op: 'add', flags: ['\\Flagged'] }]);
    // ... and a tool that takes no lock renames message 2 within the same clock tick:
    // cur/ keeps the modification time the state recorded
    const cur = join(dir, 'cur');
    const ref = join(dir, '..', 'cur-times');
    execFileSync('touch', ['-r', cur, ref]);
    const m2 = s1.messages[1]!;
    await fs.rename(join(dir, m2.rel), join(cur, `${m2.base}:2,S`));
    execFileSync('touch', ['-r', ref, cur]);
    // snapshots made from the state alone are trusted for a second at most, the folder
    // quiet or not: then cur/ is read whole
    const deadline = Date.now() + 10_000;
    let flags: string[] = [];
    while (Date.now() < deadline) {
      flags = (await f.snapshot()).messages[1]!.flags;
      if (flags.includes('\\Seen')) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.deepEqual(flags, ['\\Seen']);
    assert.deepEqual((await f.snapshot()).messages[0]!.flags, ['\\Flagged']);
  });

  void it('a state file that names files wrongly is corrected once a file is not where it says', async () => {
    const f = new MailFolder(join(fresh(), 'a'), 'INBOX', 'h');
    await f.ensure();
    await f.append(msg(1), [], new Date());
    await f.append(msg(2), [], new Date());
    await f.snapshot();
    await keepBusy(f);
    // well-formed but wrong: message 1 is said to be \\Seen, its file name says otherwise
    const path = join(f.dir, 'mailyard-modseq');
    const state = stateIn(path)!;
    state.msgs['1'] = [state.msgs['1']![0], 'S'];
    await fs.writeFile(path, JSON.stringify(state));
    const told = (await f.snapshot()).messages[0]!;
    // reading the message finds the file anyway, and the folder is read whole again
    assert.equal((await f.read(told)).toString(), msg(1).toString());
    const s = await f.snapshot();
    assert.deepEqual(s.messages[0]!.flags, []);
    assert.match(s.messages[0]!.rel, /:2,$/);
  });

  void it('a change adds a line to the state, which another process reads on from where it stopped', async () => {
    const { dir, f, other } = await twoProcesses(20);
    const path = join(dir, 'mailyard-modseq');
    const first = await fs.stat(path);
    const seen = (s: {
      messages: { uid: number; flags: string[]; modseq: number }[];
      highestModseq: number;
    }) => [s.highestModseq, s.messages.map((m) => `${m.uid} ${m.modseq} ${m.flags.join(' ')}`)];
    await f.store([{ uid: 2, op: 'add', flags: ['\\Flagged', '$Work'] }]);
    await f.expunge([3]);
    const after = await fs.stat(path);
    assert.equal(after.ino, first.ino, 'the file is added to, not replaced');
    assert.ok(
      after.size > first.size && after.size < first.size + 600,
      `two short lines: ${after.size - first.size} bytes`,
    );
    const s = await other.snapshot();
    assert.deepEqual(seen(s), seen(await f.snapshot()));
    assert.deepEqual(s.messages[1]!.flags, ['\\Flagged', '$Work']);
    assert.equal(s.messages.length, 19);
    // the lines grow to the size of the whole state (16 KiB at least), then it is written whole again
    let changes = 0;
    while ((await fs.stat(path)).ino === first.ino) {
      assert.ok(++changes < 500, 'written whole again within 500 changes');
      await f.store([
        { uid: 1 + (changes % 20), op: Math.floor(changes / 20) % 2 ? 'remove' : 'add', flags: ['\\Seen'] },
      ]);
      // read on after every few changes, and once after many
      if (changes % 7 === 0) assert.deepEqual(seen(await other.snapshot()), seen(await f.snapshot()));
    }
    assert.ok(changes > 50, `${changes} changes were lines`);
    assert.ok((await fs.stat(path)).size < 2000, 'the state of 19 messages');
    assert.deepEqual(seen(await other.snapshot()), seen(await f.snapshot()));
    assert.deepEqual(seen(await new MailFolder(dir, 'INBOX', 'h').snapshot()), seen(await f.snapshot()));
  });

  void it('an APPEND adds its line to dovecot-uidlist, as Dovecot appends, and others read on', async () => {
    const { dir, f, other, date } = await twoProcesses(5);
    const path = join(dir, UIDLIST);
    const before = readFileSync(path, 'utf8');
    const first = await fs.stat(path);
    const uids = (s: { messages: { uid: number; base: string }[]; uidNext: number }) => [
      s.uidNext,
      s.messages.map((m) => `${m.uid} ${m.base}`),
    ];

    const { uid } = await f.append(msg(5), [], date);
    const text = readFileSync(path, 'utf8');
    assert.equal((await fs.stat(path)).ino, first.ino, 'added to, not replaced');
    const base = (await f.snapshot()).messages.find((m) => m.uid === uid)!.base;
    assert.equal(text, `${before}${uid} :${base}\n`, 'one line at the end; the header as it was');
    assert.equal(parseUidList(text)!.next, uid + 1, 'the next UID follows the line, as Dovecot reads it');
    assert.deepEqual(uids(await other.snapshot()), uids(await f.snapshot()));
    assert.deepEqual(uids(await new MailFolder(dir, 'INBOX', 'h').snapshot()), uids(await f.snapshot()));

    // a line being written, or cut short by a crash, is left out; the next change writes the list whole
    await fs.appendFile(path, `${uid + 1} :1700000000.M1P1Q1.h,S=`);
    assert.deepEqual(uids(await new MailFolder(dir, 'INBOX', 'h').snapshot()), uids(await f.snapshot()));
    const next = await f.append(msg(6), [], date);
    assert.notEqual((await fs.stat(path)).ino, first.ino, 'written whole');
    const whole = parseUidList(readFileSync(path, 'utf8'))!;
    assert.equal(whole.entries.size, 7);
    assert.ok(!readFileSync(path, 'utf8').includes(',S=\n'), 'the cut line is gone');
    assert.ok(next.uid > uid);
    assert.deepEqual(uids(await other.snapshot()), uids(await f.snapshot()));

    // an EXPUNGE writes it whole, with the next UID in its header
    await f.expunge([1]);
    assert.match(readFileSync(path, 'utf8'), new RegExp(`^3 V\\d+ N${next.uid + 1} `));
    assert.deepEqual(uids(await other.snapshot()), uids(await f.snapshot()));
  });

  void it('a change line a crash cut short is left out, and the next change writes the state whole', async () => {
    const dir = join(fresh(), 'a');
    const f = new MailFolder(dir, 'INBOX', 'h');
    await f.ensure();
    for (let i = 0; i < 3; i++) await f.append(msg(i), [], new Date());
    await f.store([{ uid: 1, op: 'add', flags: ['\\Seen'] }]);
    const before = await f.snapshot();
    const path = join(dir, 'mailyard-modseq');
    const w = stateIn(path)!.w!;
    // the start of the next line, as a writer that died in the middle of it left it
    await fs.appendFile(path, `{"w":${w + 1},"highest":${before.highestModseq + 1},"msgs":{"2":[`);
    for (const g of [f, new MailFolder(dir, 'INBOX', 'h')]) {
      const s = await g.snapshot();
      assert.equal(s.highestModseq, before.highestModseq, 'what the whole lines say');
      assert.deepEqual(
        s.messages.map((m) => [m.uid, m.modseq, m.flags.join(' ')]),
        before.messages.map((m) => [m.uid, m.modseq, m.flags.join(' ')]),
      );
    }
    await f.store([{ uid: 2, op: 'add', flags: ['\\Answered'] }]);
    const text = readFileSync(path, 'utf8');
    assert.equal(text.split('\n').length, 2, 'one line, the whole state');
    const s = await new MailFolder(dir, 'INBOX', 'h').snapshot();
    assert.equal(s.highestModseq, before.highestModseq + 1);
    assert.deepEqual(s.messages[1]!.flags, ['\\Answered']);
    assert.deepEqual(s.messages[0]!.flags, ['\\Seen']);
  });

  void it('numbered messages leave new/ for cur/, a batch per change, as Dovecot moves them', async () => {
    const dir = join(fresh(), 'a');
    const f = new MailFolder(dir, 'INBOX', 'h');
    await f.ensure();
    // deliveries: files in new/, as delivery writes them without the lock
    const count = MOVE_BATCH + 40;
    for (let i = 0; i < count; i++) {
      const data = msg(i);
      await fs.writeFile(
        join(dir, 'new', uniqueName(data.length, 'h', new Date(1_700_000_000_000 + i * 1000))),
        data,
      );
    }
    const inNew = async () => (await fs.readdir(join(dir, 'new'))).length;
    const s1 = await f.snapshot();
    assert.deepEqual(
      s1.messages.map((m) => m.uid),
      Array.from({ length: count }, (_, i) => i + 1),
    );
    assert.equal(await inNew(), 40, 'one batch moved when they were numbered');
    // another process still holding the first snapshot reads every message
    const other = new MailFolder(dir, 'INBOX', 'h');
    await other.snapshot();
    await f.store([{ uid: 1, op: 'add', flags: ['\\Seen'] }]);
    assert.equal(await inNew(), 0, 'the rest with the next change');
    assert.equal((await fs.readdir(join(dir, 'cur'))).length, count);
    for (const m of [s1.messages[0]!, s1.messages[count - 1]!])
      assert.equal((await other.read(m)).toString(), msg(m.uid - 1).toString());
    const s2 = await other.snapshot();
    assert.deepEqual(
      s2.messages.map((m) => [m.uid, m.flags.join(' ')]),
      Array.from({ length: count }, (_, i) => [i + 1, i === 0 ? '\\Seen' : '']),
    );
    assert.ok(s2.messages.every((m) => m.rel === `cur/${m.base}:2,${m.uid === 1 ? 'S' : ''}`));
    // the state no longer names what was in new/
    assert.deepEqual(stateIn(join(dir, 'mailyard-modseq'))!.inNew, []);
  });

  void it('a damaged state file is rebuilt from the files, never served', async () => {
    const dir = join(fresh(), 'a');
    const f = new MailFolder(dir, 'INBOX', 'h');
    await f.ensure();
    await f.append(msg(1), ['\\Seen'], new Date());
    await f.append(msg(2), ['\\Flagged'], new Date());
    const before = await f.snapshot();
    await fs.writeFile(join(dir, 'mailyard-modseq'), '{"highest":9,"msgs":{"1":[3,"T"]'); // cut short
    for (const g of [f, new MailFolder(dir, 'INBOX', 'h')]) {
      const s = await g.snapshot();
      assert.deepEqual(
        s.messages.map((m) => [m.uid, m.flags.join(' ')]),
        [
          [1, '\\Seen'],
          [2, '\\Flagged'],
        ],
      );
      assert.equal(s.validity, before.validity);
    }
    assert.ok(stateIn(join(dir, 'mailyard-modseq')), 'the rebuilt state parses');
  });

  void it('a lock left by a process that died is broken, a live one is waited for', async () => {
    const f = new MailFolder(join(fresh(), 'a'), 'INBOX', 'h');
    await f.ensure();
    await f.append(msg(1), [], new Date());
    const lock = join(f.dir, `${UIDLIST}.lock`);
    // a holder that died three minutes ago (locks older than two minutes are stale)
    await fs.writeFile(lock, '');
    const old = new Date(Date.now() - 180_000);
    await fs.utimes(lock, old, old);
    const { uid } = await f.append(msg(2), [], new Date());
    assert.equal(uid, 2);
    await assert.rejects(fs.access(lock), 'the stale lock is gone');
    // a live holder: the append waits until it lets go
    await fs.writeFile(lock, '');
    let done = false;
    const appended = f.append(msg(3), [], new Date()).then((r) => ((done = true), r));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(done, false, 'waits while the lock is held');
    await fs.unlink(lock);
    assert.equal((await appended).uid, 3);
  });

  void it('expunge removes files and records vanished UIDs', async () => {
    const f = new MailFolder(join(fresh(), 'a'), 'INBOX', 'h');
    await f.ensure();
    for (let i = 0; i < 3; i++) await f.append(msg(i), [], new Date());
    const s = await f.snapshot();
    const removed = await f.expunge([2]);
    assert.deepEqual(removed, [2]);
    const s2 = await f.snapshot();
    assert.deepEqual(
      s2.messages.map((m) => m.uid),
      [1, 3],
    );
    assert.deepEqual(await f.vanishedSince(s.highestModseq), [2]);
    const { uid } = await f.append(msg(9), [], new Date());
    assert.equal(uid, 4, 'UIDs are never reused');
  });

  void it('keeps the expunge history apart, cut back to its last entries past its size', async () => {
    const f = new MailFolder(join(fresh(), 'a'), 'INBOX', 'h');
    await f.ensure();
    const date = new Date();
    await f.appendMany(Array.from({ length: 10 }, (_, i) => ({ data: msg(i), flags: [], date })));
    const start = (await f.snapshot()).highestModseq;
    // a long history of expunges from before (MODSEQ 1), just below the size it is cut at
    const old = Array.from(
      { length: Math.floor(EXPUNGES_TRIM_BYTES / 10) },
      (_, i) => `${1_000_000 + i} 1\n`,
    );
    await fs.writeFile(join(f.dir, 'mailyard-expunged'), old.join(''));
    await f.expunge([1, 2, 3, 4, 5]);
    const mid = (await f.snapshot()).highestModseq;
    await f.expunge([6, 7, 8, 9, 10]);
    const end = await f.snapshot();
    const size = (await fs.stat(join(f.dir, 'mailyard-expunged'))).size;
    assert.ok(size <= EXPUNGES_TRIM_BYTES / 2 + 100, `cut back: ${size} bytes`);
    // the state every process reads at every change does not grow with the history
    assert.ok(readFileSync(join(f.dir, 'mailyard-modseq'), 'utf8').length < 1000);
    // from before the cut: not known (the session then names every UID not there)
    assert.equal(await f.vanishedSince(0), null);
    // after it: exactly what went since the MODSEQ
    const sorted = async (ms: number) => (await f.vanishedSince(ms))?.sort((a, b) => a - b);
    assert.deepEqual(await sorted(start), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.deepEqual(await sorted(mid), [6, 7, 8, 9, 10]);
    assert.deepEqual(await f.vanishedSince(end.highestModseq), []);
  });

  void it('moves the expunge history of an older state into its file at the next change', async () => {
    const f = new MailFolder(join(fresh(), 'a'), 'INBOX', 'h');
    await f.ensure();
    for (let i = 0; i < 3; i++) await f.append(msg(i), [], new Date());
    const before = await f.snapshot();
    // as an older version wrote it: UIDs 7 and 8 expunged at MODSEQ 2 and 3
    const path = join(f.dir, 'mailyard-modseq');
    const state = stateIn(path)!;
    state.expunged = [
      [7, 2],
      [8, 3],
    ];
    await fs.writeFile(path, JSON.stringify(state));
    assert.deepEqual((await f.vanishedSince(2))?.sort(), [8]);
    await f.expunge([1]);
    assert.deepEqual(
      (await f.vanishedSince(1))?.sort((a, b) => a - b),
      [1, 7, 8],
    );
    assert.deepEqual(await f.vanishedSince(before.highestModseq), [1]);
    assert.deepEqual(stateIn(path)!.expunged, []);
    // a line a crash cut short is left out, and the next expunge is read whole
    await fs.appendFile(join(f.dir, 'mailyard-expunged'), '12');
    await f.expunge([2]);
    assert.deepEqual((await f.vanishedSince(before.highestModseq))?.sort(), [1, 2]);
  });

  void it('copies between folders', async () => {
    const acct = new MailAccount(fresh(), 'b@x.test', 'h');
    await acct.ensureDefaults();
    const names = (await acct.list()).map((f) => f.name);
    for (const n of ['INBOX', 'Sent', 'Drafts', 'Junk', 'Trash', 'Archive']) assert.ok(names.includes(n), n);
    const inbox = acct.folder('INBOX');
    await inbox.append(msg(1), ['\\Seen'], new Date());
    const s = await inbox.snapshot();
    const r = await acct.folder('Junk').copyFrom(inbox, s.messages);
    assert.deepEqual(r.pairs, [[1, 1]]);
    const j = await acct.folder('Junk').snapshot();
    assert.deepEqual(j.messages[0]!.flags, ['\\Seen']);
    assert.deepEqual(await acct.folder('Junk').read(j.messages[0]!), msg(1));
    assert.deepEqual(await acct.usage(), { bytes: msg(1).length * 2, messages: 2 });
  });

  void it('every login subscribes the special-use folders, made before it or unsubscribed since', async () => {
    const acct = new MailAccount(fresh(), 'j@x.test', 'h');
    // delivery filed spam before the user ever logged in
    await acct.folder('Junk').ensure();
    await acct.ensureDefaults();
    const all = ['Archive', 'Drafts', 'Junk', 'Sent', 'Trash'];
    assert.deepEqual((await acct.subscriptions()).sort(), all);
    // unsubscribed by the user: subscribed again at the next login (Dovecot's auto = subscribe)
    await acct.updateSubscriptions((subs) => subs.filter((n) => n !== 'Junk'));
    await acct.ensureDefaults();
    assert.deepEqual((await acct.subscriptions()).sort(), all);
  });

  void it('folders: create, nested, rename with children, delete', async () => {
    const acct = new MailAccount(fresh(), 'c@x.test', 'h');
    await acct.ensureDefaults();
    await acct.create('Work');
    await acct.create('Work/Projects');
    await acct.create('Ünïcödé.dots');
    await assert.rejects(acct.create('Work'), /exists/);
    await acct.rename('Work', 'Job');
    let names = (await acct.list()).map((f) => f.name);
    assert.ok(names.includes('Job') && names.includes('Job/Projects') && !names.includes('Work'));
    assert.ok(names.includes('Ünïcödé.dots'));
    await acct.delete('Job/Projects');
    names = (await acct.list()).map((f) => f.name);
    assert.ok(!names.includes('Job/Projects'));
    await assert.rejects(acct.delete('INBOX'));
  });

  // The file system may give a folder created again under a deleted one's name its UID list
  // on the inode the old list had, as it gives a freed inode to the next file made: the
  // old list is pinned by a link of its own, so that no other file takes its inode, and
  // once the new folder has its list, that list's bytes are written into the pinned inode
  // and it is renamed over the new list, as the store renames its lock file over the list.
  for (const { grown, what } of [
    { grown: true, what: 'a longer list on the old inode' },
    { grown: false, what: 'a list of the same size and time on the old inode' },
  ])
    void it(`a folder deleted and created again is seen as the new one by its old object: ${what}`, async () => {
      const root = fresh();
      const acct = new MailAccount(root, 'u@x.test', 'h');
      await acct.ensureDefaults();
      await acct.create('Work');
      const old = acct.folder('Work');
      const { dir } = old;
      const list = join(dir, UIDLIST);
      // names and messages of one length: the lists of the two folders differ only in
      // their UIDVALIDITY, GUID and names, line for line (one line more when grown)
      const drop = (ids: number[]) =>
        Promise.all(
          ids.map((i) => fs.writeFile(join(dir, 'new', `1700000000.M${i}P1Q1.h,S=${msg(i).length}`), msg(i))),
        );
      const seen = (s: { messages: { uid: number; base: string }[] }) =>
        s.messages.map((m) => `${m.uid} ${m.base}`);
      await drop([1, 2]);
      const first = await old.snapshot();
      assert.deepEqual(
        first.messages.map((m) => m.uid),
        [1, 2],
      );
      const was = await fs.stat(list, { bigint: true });
      const pin = join(root, 'old-list');
      await fs.link(list, pin);

      await acct.delete('Work');
      await acct.create('Work');
      const now = acct.folder('Work');
      assert.notEqual(now, old, 'the account made a new object; a session still holds the old one');
      await drop(grown ? [3, 4, 5] : [3, 4]);
      const created = await now.snapshot();
      assert.notEqual(created.validity, first.validity);
      await fs.writeFile(pin, readFileSync(list));
      if (!grown)
        execFileSync('touch', [
          '-m',
          '-d',
          `@${was.mtimeNs / 1_000_000_000n}.${String(was.mtimeNs % 1_000_000_000n).padStart(9, '0')}`,
          pin,
        ]);
      await fs.rename(pin, list);
      const is = await fs.stat(list, { bigint: true });
      assert.equal(is.ino, was.ino);
      if (grown) assert.ok(is.size > was.size);
      else assert.deepEqual([is.size, is.mtimeNs], [was.size, was.mtimeNs], 'the same identity');

      const s = await old.snapshot();
      assert.equal(s.validity, created.validity, 'the new UIDVALIDITY');
      assert.deepEqual(seen(s), seen(created), "the new folder's messages under their own UIDs");
      // and nothing the old object wrote numbered them anew under the old UIDVALIDITY
      assert.equal(parseUidList(readFileSync(list, 'utf8'))!.validity, created.validity);
      assert.deepEqual(seen(await new MailFolder(dir, 'Work', 'h').snapshot()), seen(created));
      // the old object goes on with the new folder
      await old.store([{ uid: 1, op: 'add', flags: ['\\Seen'] }]);
      assert.deepEqual(
        (await now.snapshot()).messages.map((m) => m.flags),
        [['\\Seen'], ...(grown ? [[], []] : [[]])],
      );
    });

  void it('allocates unique UIDs under concurrent delivery, appends and sessions in several processes', async () => {
    const root = fresh();
    const account = 'd@x.test';
    const acct = new MailAccount(root, account, 'h');
    await acct.ensureDefaults();
    const worker = `
      import { MaildirStore, MailAccount } from './packages/mailstore/src/index.ts';
      const [root, account, id] = process.argv.slice(1);
      const store = new MaildirStore({ root, hostname: 'w' + id });
      const acct = new MailAccount(root, account, 'w' + id);
      const f = acct.folder('INBOX');
      for (let i = 0; i < 20; i++) {
        await store.deliver({ account, folder: 'INBOX', data: Buffer.from('Subject: ' + id + '-' + i + '\\r\\n\\r\\nx\\r\\n'),
          queueId: 'W' + id + 'N' + i, recipient: account, receivedAt: new Date() });
        await f.append(Buffer.from('Subject: a' + id + '-' + i + '\\r\\n\\r\\nx\\r\\n'), [], new Date());
        const s = await f.snapshot();
        if (s.messages.length) await f.store([{ uid: s.messages[s.messages.length - 1].uid, op: 'add', flags: ['\\\\Seen'] }]);
      }
    `;
    const procs = [1, 2, 3].map(
      (id) =>
        new Promise<void>((resolve, reject) => {
          const p = spawn(
            process.execPath,
            ['--import', 'tsx', '--input-type=module', '-e', worker, root, account, String(id)],
            {
              cwd: join(import.meta.dirname, '../../..'),
              stdio: ['ignore', 'inherit', 'inherit'],
            },
          );
          p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`worker exit ${code}`))));
        }),
    );
    // this process keeps taking snapshots meanwhile, as an IMAP session would
    const seen = new Map<string, number>();
    let done = false;
    const all = Promise.all(procs).finally(() => (done = true));
    while (!done) {
      const s = await new MailFolder(acct.folder('INBOX').dir, 'INBOX', 'h').snapshot();
      for (const m of s.messages) {
        const prev = seen.get(m.base);
        if (prev !== undefined) assert.equal(prev, m.uid, 'a message kept its UID');
        seen.set(m.base, m.uid);
      }
    }
    await all;
    const s = await new MailFolder(acct.folder('INBOX').dir, 'INBOX', 'h').snapshot();
    assert.equal(s.messages.length, 120);
    assert.equal(new Set(s.messages.map((m) => m.uid)).size, 120);
    for (const m of s.messages) if (seen.has(m.base)) assert.equal(seen.get(m.base), m.uid);
    assert.equal(s.uidNext, 121);
  });
});

it('account directories are <root>/<domain>/<local>, as Dovecot %d/%n expects, and never escape the root', () => {
  assert.equal(accountDir('/srv/mail', 'alice.smith@example.org'), '/srv/mail/example.org/alice.smith');
  assert.equal(accountDir('/srv/mail', '..@example.org'), '/srv/mail/example.org/%2e.');
  assert.equal(accountDir('/srv/mail', 'a/b@example.org'), '/srv/mail/example.org/a%2fb');
});

void describe('MailAccount', () => {
  void it('does not keep an object for every folder name ever asked about', () => {
    const account = new MailAccount(fresh(), 'a@x.test');
    const before = heapAfterGc();
    // a client asking STATUS of 50,000 names that do not exist
    for (let i = 0; i < 50_000; i++) account.folder(`never-created-${i}`);
    const grown = heapAfterGc() - before;
    assert.equal(account.account, 'a@x.test');
    assert.ok(grown < 8 * 1024 * 1024, `heap grew by ${Math.round(grown / 1024 / 1024)} MiB`);
    // and a folder in use is the same object each time
    assert.equal(account.folder('INBOX'), account.folder('inbox'));
  });

  void it('a folder the disk cannot read is an error, never "no such folder"', async () => {
    const account = new MailAccount(fresh(), 'a@x.test');
    await account.create('Projects');
    const folder = account.folder('Projects');
    // the store fails (a symlink loop gives ELOOP, as a failing disk gives EIO)
    const cur = join(folder.dir, 'cur');
    await fs.rm(cur, { recursive: true });
    await fs.symlink(cur, cur);
    await assert.rejects(folder.exists(), { code: 'ELOOP' });
    // neither "already exists" nor "no such folder": the error itself reaches the caller
    await assert.rejects(account.delete('Projects'), { code: 'ELOOP' });
    await assert.rejects(account.create('Projects'), { code: 'ELOOP' });
    // and a folder that is simply not there is still a plain no
    assert.equal(await account.folder('Nothing').exists(), false);
    assert.equal(await account.folder('n'.repeat(300)).exists(), false);
  });
});
