import assert from 'node:assert/strict';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  promises as fs,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { tempDir, waitFor } from '@mailyard/testkit';
import {
  MAILDIRSIZE,
  MailAccount,
  accountDir,
  folderDir,
  MaildirStore,
  parseMaildirSize,
  readUsage,
  recordUsage,
  type Counted,
} from '../src/index.js';

const tmp = tempDir('maildirsize-');
after(() => tmp.cleanup());
let n = 0;
const fresh = () => join(tmp.path, `r${++n}`);
const msg = (i: number, pad = 0) => Buffer.from(`Subject: m${i}\r\n\r\nbody ${i}${'x'.repeat(pad)}\r\n`);
const LIMIT = 1_000_000;

/** The usage counted from the files themselves, as a check on the quota file. */
async function counted(acct: MailAccount): Promise<{ bytes: number; messages: number }> {
  return acct.usage(0);
}

void describe('maildirsize (Maildir++ quota)', () => {
  void it('is created on first read and kept right by deliveries, APPEND, COPY, expunge', async () => {
    const root = fresh();
    const store = new MaildirStore({ root, hostname: 'h' });
    const acct = new MailAccount(root, 'q@x.test', 'h');
    const deliver = (i: number) =>
      store.deliver({
        account: 'q@x.test',
        folder: 'INBOX',
        data: msg(i, i * 10),
        queueId: `Q${i}`,
        recipient: 'q@x.test',
        receivedAt: new Date(1700000000000 + i * 1000),
      });
    await deliver(1);
    assert.deepEqual(await acct.usage(LIMIT), { bytes: msg(1, 10).length, messages: 1 });
    const file = join(acct.dir, MAILDIRSIZE);
    assert.match(readFileSync(file, 'utf8'), new RegExp(`^${LIMIT}S\\n${msg(1, 10).length} 1\\n$`));

    await deliver(2);
    await deliver(2); // a redelivery writes nothing and counts nothing
    const inbox = acct.folder('INBOX');
    await inbox.append(msg(3, 5), [], new Date());
    await acct.create('Work');
    const snap = await inbox.snapshot();
    await acct.folder('Work').copyFrom(inbox, snap.messages.slice(0, 2));
    await inbox.expunge([snap.messages[0]!.uid]);
    const want = await counted(acct);
    assert.equal(want.messages, 4);
    assert.deepEqual(await acct.usage(LIMIT), want);
    // one line per change after the first: 2 deliveries, APPEND, COPY, expunge
    assert.equal(readFileSync(file, 'utf8').trim().split('\n').length, 2 + 4);
  });

  void it('is trusted without walking the folders, until it names another limit', async () => {
    const root = fresh();
    const acct = new MailAccount(root, 'r@x.test', 'h');
    await acct.ensureDefaults();
    await acct.folder('INBOX').append(msg(1), [], new Date());
    assert.equal((await acct.usage(LIMIT)).messages, 1);
    // a message put there by hand is not seen: the file is read, the folders are not
    const byHand = join(acct.folder('INBOX').dir, 'cur', '1700000000.hand.h,S=5000:2,');
    writeFileSync(byHand, 'x'.repeat(5000));
    assert.deepEqual(await acct.usage(LIMIT), { bytes: msg(1).length, messages: 1 });
    // a new limit rebuilds it from the folders
    assert.deepEqual(await acct.usage(LIMIT * 2), { bytes: msg(1).length + 5000, messages: 2 });
    assert.match(readFileSync(join(acct.dir, MAILDIRSIZE), 'utf8'), new RegExp(`^${LIMIT * 2}S\\n`));
  });

  void it('is rebuilt when damaged, too long, or over quota for 15 minutes', async () => {
    const root = fresh();
    const acct = new MailAccount(root, 's@x.test', 'h');
    await acct.ensureDefaults();
    const f = acct.folder('INBOX');
    await f.append(msg(1), [], new Date());
    const file = join(acct.dir, MAILDIRSIZE);
    const right = { bytes: msg(1).length, messages: 1 };

    writeFileSync(file, `${LIMIT}S\n12 1\ngarbage\n`);
    assert.deepEqual(await acct.usage(LIMIT), right);

    writeFileSync(file, `${LIMIT}S\n12 1\n-20 -1\n`); // negative total
    assert.deepEqual(await acct.usage(LIMIT), right);

    writeFileSync(file, `${LIMIT}S\n12 1\n5`); // torn last line
    assert.deepEqual(await acct.usage(LIMIT), right);

    // past 5120 bytes its sum answers at once, and the file is folded back into one line
    // meanwhile (a drift corrected)
    for (let i = 0; i < 3; i++) await f.append(msg(i), [], new Date());
    writeFileSync(file, `${LIMIT}S\n` + '1 0\n'.repeat(1300));
    const all = await counted(acct);
    assert.equal(all.messages, 4);
    assert.deepEqual(await acct.usage(LIMIT), { bytes: 1300, messages: 0 });
    const folded = `${LIMIT}S\n${all.bytes} ${all.messages}\n`;
    await waitFor(() => readFileSync(file, 'utf8') === folded, { what: 'the file rebuilt' });
    assert.deepEqual(await acct.usage(LIMIT), all);
    // past 64 KiB it is not read: the count answers
    writeFileSync(file, `${LIMIT}S\n` + '1 0\n'.repeat(17_000));
    assert.deepEqual(await acct.usage(LIMIT), all);
    assert.equal(readFileSync(file, 'utf8'), folded);

    // "over quota" is believed for 15 minutes, then counted again
    writeFileSync(file, `${LIMIT}S\n${LIMIT + 1} 1\n`);
    assert.equal((await acct.usage(LIMIT)).bytes, LIMIT + 1);
    const old = new Date(Date.now() - 16 * 60_000);
    await fs.utimes(file, old, old);
    assert.deepEqual(await acct.usage(LIMIT), all);
  });

  void it('deleting a folder takes its messages off the usage', async () => {
    const acct = new MailAccount(fresh(), 't@x.test', 'h');
    await acct.ensureDefaults();
    await acct.folder('INBOX').append(msg(1), [], new Date());
    await acct.create('Old');
    for (let i = 0; i < 3; i++) await acct.folder('Old').append(msg(i, 100), [], new Date());
    assert.equal((await acct.usage(LIMIT)).messages, 4);
    await acct.delete('Old');
    assert.deepEqual(await acct.usage(LIMIT), { bytes: msg(1).length, messages: 1 });
  });

  void it('a folder that cannot be read fails the count, which writes no usage without it', async () => {
    const root = fresh();
    const store = new MaildirStore({ root, hostname: 'h' });
    const acct = new MailAccount(root, 'u@x.test', 'h');
    await acct.ensureDefaults();
    await acct.create('Big');
    for (let i = 0; i < 3; i++)
      await store.deliver({
        account: 'u@x.test',
        folder: 'Big',
        data: msg(i, 100),
        queueId: `B${i}`,
        recipient: 'u@x.test',
        receivedAt: new Date(),
      });
    const dir = join(folderDir(root, 'u@x.test', 'Big'), 'new');
    renameSync(dir, `${dir}.kept`);
    // a symlink loop: every look at new/ fails (ELOOP), as on a failing disk (EIO)
    symlinkSync(dir, dir);
    await assert.rejects(acct.usage(LIMIT), { code: 'ELOOP' });
    assert.ok(!existsSync(join(accountDir(root, 'u@x.test'), MAILDIRSIZE)), 'no quota file written');
    rmSync(dir);
    renameSync(`${dir}.kept`, dir);
    assert.equal((await acct.usage(LIMIT)).messages, 3);
  });

  void it('a count that a delivery raced is done again, so the file does not miss it', async () => {
    const dir = fresh();
    const newDir = join(dir, 'new');
    await fs.mkdir(newDir, { recursive: true });
    await fs.mkdir(join(dir, 'tmp'));
    await sleep(30); // the directory's time is not of this clock tick
    let calls = 0;
    const count = async (): Promise<Counted> => {
      calls++;
      const statAt = BigInt(Date.now()) * 1_000_000n;
      const before = (await fs.stat(newDir, { bigint: true })).mtimeNs;
      const names = await fs.readdir(newDir);
      if (calls === 1) {
        // a delivery lands after the directory was read
        await sleep(30);
        writeFileSync(join(newDir, '1700000000.d.h,S=10'), 'x'.repeat(10));
      }
      return {
        usage: { bytes: names.length * 10, messages: names.length },
        dirs: [[newDir, before, statAt]],
      };
    };
    assert.deepEqual(await readUsage(dir, LIMIT, count), { bytes: 10, messages: 1 });
    assert.ok(calls >= 2, `counted ${calls} times`);
    assert.equal(readFileSync(join(dir, MAILDIRSIZE), 'utf8'), `${LIMIT}S\n10 1\n`);
  });

  void it('a background rebuild that a change raced keeps the file; a later one folds it', async () => {
    // the change came after the count ended, and the count either saw it or not (its line
    // follows its syncs): the rebuilt file would lose or double it
    for (const saw of [false, true]) {
      const dir = fresh();
      mkdirSync(join(dir, 'tmp'), { recursive: true });
      // folders the check stats one after another, their times old enough to be trusted
      const dirs = Array.from({ length: 20 }, (_, i) => join(dir, `f${i}`));
      const old = new Date(Date.now() - 60_000);
      for (const d of dirs) {
        mkdirSync(d);
        await fs.utimes(d, old, old);
      }
      // the check's last stat is when the rebuild ends
      let lastLooks = 0;
      const realStat = fs.stat;
      fs.stat = ((path: string, opts: never) => {
        if (path === dirs.at(-1)) lastLooks++;
        return realStat(path, opts);
      }) as typeof fs.stat;
      try {
        const file = join(dir, MAILDIRSIZE);
        const long = `${LIMIT}S\n` + '1 0\n'.repeat(1300); // 1300 bytes: rebuilt in the background
        writeFileSync(file, long);
        let calls = 0;
        const count = async (): Promise<Counted> => {
          calls++;
          const looked = await Promise.all(
            dirs.map(async (d): Promise<Counted['dirs'][number]> => {
              const statAt = BigInt(Date.now()) * 1_000_000n;
              return [d, (await fs.stat(d, { bigint: true })).mtimeNs, statAt];
            }),
          );
          if (calls === 1) setImmediate(() => recordUsage(dir, 500, 1));
          const seen = calls > 1 || saw;
          return { usage: { bytes: seen ? 1800 : 1300, messages: seen ? 1 : 0 }, dirs: looked };
        };
        assert.deepEqual(await readUsage(dir, LIMIT, count), { bytes: 1300, messages: 0 });
        await waitFor(() => lastLooks >= 2, { what: 'the first rebuild' });
        assert.equal(readFileSync(file, 'utf8'), long + '500 1\n', `saw ${saw}: the file is kept`);
        assert.deepEqual(await readUsage(dir, LIMIT, count), { bytes: 1800, messages: 1 });
        assert.equal(calls, 1, 'not tried again at once');
        // a few dozen changes later, a quiet rebuild folds it
        appendFileSync(file, '1 0\n-1 0\n'.repeat(60));
        assert.deepEqual(await readUsage(dir, LIMIT, count), { bytes: 1800, messages: 1 });
        await waitFor(() => readFileSync(file, 'utf8') === `${LIMIT}S\n1800 1\n`, {
          what: 'the file folded',
        });
        assert.equal(calls, 2);
      } finally {
        fs.stat = realStat;
      }
    }
  });

  void it('readers of one account at the same time share one count', async () => {
    const dir = fresh();
    mkdirSync(join(dir, 'tmp'), { recursive: true });
    let calls = 0;
    const count = async (): Promise<Counted> => {
      calls++;
      await sleep(20);
      return { usage: { bytes: 30, messages: 3 }, dirs: [] };
    };
    const all = await Promise.all([1, 2, 3].map(() => readUsage(dir, LIMIT, count)));
    assert.deepEqual(all, Array(3).fill({ bytes: 30, messages: 3 }));
    assert.equal(calls, 1);
  });

  void it('a removed quota leaves no file that grows without end', () => {
    const dir = fresh();
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, MAILDIRSIZE), `${LIMIT}S\n` + '10 1\n'.repeat(13_200));
    recordUsage(dir, 10, 1);
    assert.equal(
      existsSync(join(dir, MAILDIRSIZE)),
      false,
      'dropped: the next read with a limit rebuilds it',
    );
    recordUsage(dir, 10, 1); // and no file is created
    assert.equal(existsSync(join(dir, MAILDIRSIZE)), false);
  });

  void it('parses the Maildir++ format, and nothing else', () => {
    assert.deepEqual(parseMaildirSize('100S\n10 1\n  20   2\n-5 -1\n', 100), { bytes: 25, messages: 2 });
    assert.equal(parseMaildirSize('100S\n10 1\n', 200), null);
    // Dovecot's definition with a message limit
    assert.deepEqual(parseMaildirSize('100S,10C\n10 1\n', 100), { bytes: 10, messages: 1 });
    assert.equal(parseMaildirSize('10C\n10 1\n', 100), null);
    assert.equal(parseMaildirSize('100S\n10\n', 100), null);
    assert.equal(parseMaildirSize('', 100), null);
  });
});
