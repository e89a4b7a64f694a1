import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { tempDir } from '@mailyard/testkit';
import { crlfSize, INDEX_CACHE, IndexCacheFile, MailFolder, withCrlf } from '../src/index.js';

const tmp = tempDir('index-cache-');
after(() => tmp.cleanup());
let n = 0;
const fresh = async () => {
  const dir = join(tmp.path, `f${++n}`);
  await fs.mkdir(dir, { recursive: true });
  return dir;
};

interface Rec {
  subject: string;
}
const codec = {
  encode: (r: Rec) => ({ s: r.subject }),
  decode: (v: unknown) =>
    typeof v === 'object' && v !== null && typeof (v as { s?: unknown }).s === 'string'
      ? { subject: (v as { s: string }).s }
      : null,
};
const recs = (from: number, to: number): [string, Rec][] =>
  Array.from({ length: to - from }, (_, i) => [`base${from + i}`, { subject: `subject "${from + i}" é\n` }]);

void describe('IndexCacheFile', () => {
  void it('reads back what was appended, then only what others appended since', async () => {
    const dir = await fresh();
    const w = new IndexCacheFile(dir, codec);
    const r = new IndexCacheFile(dir, codec);
    await w.append(recs(0, 3));
    const first = await r.read();
    assert.deepEqual(first.records, recs(0, 3));
    assert.equal(first.fromStart, true);
    await w.append(recs(3, 5));
    const next = await r.read();
    assert.deepEqual(next.records, recs(3, 5));
    assert.equal(next.fromStart, false);
  });

  void it('skips a torn last record and a damaged one, and keeps appending after them', async () => {
    const dir = await fresh();
    const f = new IndexCacheFile(dir, codec);
    await f.append(recs(0, 4));
    const path = join(dir, INDEX_CACHE);
    const text = await fs.readFile(path, 'utf8');
    // damage record 1 (checksum no longer matches) and cut record 3 in half
    const lines = text.split('\n');
    const i1 = lines.findIndex((l) => l.includes('base1'));
    lines[i1] = lines[i1]!.replace('subject', 'subjecT');
    const damaged = lines.join('\n');
    await fs.writeFile(path, damaged.slice(0, damaged.lastIndexOf('base3') + 10));
    const r = new IndexCacheFile(dir, codec);
    const got = await r.read();
    assert.deepEqual(
      got.records.map(([k]) => k),
      ['base0', 'base2'],
    );
    assert.equal(got.bad, 1);
    // the next batch starts on a line of its own: the torn record does not swallow it
    await f.append(recs(4, 5));
    const after = await new IndexCacheFile(dir, codec).read();
    assert.deepEqual(
      after.records.map(([k]) => k),
      ['base0', 'base2', 'base4'],
    );
  });

  void it('reports a file that is not ours, and a rewrite replaces it', async () => {
    const dir = await fresh();
    await fs.writeFile(join(dir, INDEX_CACHE), Buffer.from([0, 1, 2, 255, 10, 10, 65]));
    const f = new IndexCacheFile(dir, codec);
    const got = await f.read();
    assert.equal(got.foreign, true);
    assert.equal(got.records.length, 0);
    await f.rewrite(recs(0, 2));
    const again = await f.read();
    assert.equal(again.fromStart, true);
    assert.deepEqual(again.records, recs(0, 2));
  });

  void it('keeps every record whole when many writers append at once', async () => {
    const dir = await fresh();
    const writers = Array.from({ length: 8 }, () => new IndexCacheFile(dir, codec));
    // batches larger than one write() (256 KiB) from eight writers at the same time
    const big = (w: number): [string, Rec][] =>
      Array.from({ length: 3000 }, (_, i) => [`w${w}-${i}`, { subject: 'x'.repeat(100) + i }]);
    await Promise.all(writers.map((w, i) => w.append(big(i))));
    const got = await new IndexCacheFile(dir, codec).read();
    assert.equal(got.records.length, 8 * 3000);
    // two writers may both have created the file and written its first line
    assert.ok(got.bad <= writers.length - 1, `bad lines: ${got.bad}`);
  });
});

void describe('MailFolder.readHeaders', () => {
  void it('never follows a symbolic link, and replaces it without touching its target', async () => {
    const dir = await fresh();
    const target = join(dir, 'elsewhere');
    await fs.writeFile(target, 'precious\n');
    await fs.symlink(target, join(dir, INDEX_CACHE));
    const f = new IndexCacheFile(dir, codec);
    const r = await f.read();
    assert.equal(r.foreign, true);
    await assert.rejects(f.append(recs(0, 1)), /ELOOP/);
    await f.rewrite(recs(0, 2));
    assert.equal(await fs.readFile(target, 'utf8'), 'precious\n');
    assert.ok((await fs.lstat(join(dir, INDEX_CACHE))).isFile());
    assert.deepEqual((await new IndexCacheFile(dir, codec).read()).records, recs(0, 2));
  });

  void it('does not read a file beyond the size limit (sparse 300 MiB): it is replaced instead', async () => {
    const dir = await fresh();
    const w = new IndexCacheFile(dir, codec);
    await w.append(recs(0, 2));
    await fs.truncate(join(dir, INDEX_CACHE), 300 * 1024 * 1024);
    const r = await new IndexCacheFile(dir, codec).read();
    assert.deepEqual(r.records, []);
    assert.equal(r.foreign, true);
  });

  void it('reads header blocks only, follows renamed files, and reports removed ones', async () => {
    const dir = await fresh();
    const folder = new MailFolder(dir, 'INBOX');
    await folder.ensure();
    const long = 'X-Long: ' + 'y'.repeat(20000) + '\r\n';
    const bodies = [
      'Subject: one\r\n\r\nbody one\r\n',
      'Subject: two\r\n' + long + '\r\nbody two\r\n',
      'Subject: three\n\nbody three\n',
      'Subject: four\r\n\r\nbody four\r\n',
    ];
    for (const [i, b] of bodies.entries())
      await fs.writeFile(join(dir, 'new', `${1700000000 + i}.M${i}.h`), b);
    const snap = await folder.snapshot();
    // another session renames one (a flag change) and removes another
    await fs.rename(join(dir, snap.messages[0]!.rel), join(dir, 'cur', `${snap.messages[0]!.base}:2,S`));
    await fs.unlink(join(dir, snap.messages[3]!.rel));
    const blocks = await folder.readHeaders(snap.messages);
    assert.equal(blocks[0]!.text, 'Subject: one\r\n');
    assert.equal(blocks[1]!.text, 'Subject: two\r\n' + long);
    assert.equal(blocks[2]!.text, 'Subject: three\n');
    assert.equal(blocks[3], null);
    // no sizes in these names: counted in the file, every line end CRLF
    assert.equal(blocks[2]!.sentSize, Buffer.byteLength(bodies[2]!) + 3);
    assert.equal(blocks[1]!.sentSize, Buffer.byteLength(bodies[1]!));
  });

  void it('gives each message its size with CRLF line ends, reading a file whole only where it must', async () => {
    const dir = await fresh();
    const folder = new MailFolder(dir, 'INBOX');
    await folder.ensure();
    /** A message of `lines` body lines, each ending in `eol`. */
    const text = (eol: string, lines: number) =>
      Buffer.from(
        ['Subject: big', '', ...Array.from({ length: lines }, (_, i) => `line ${i}`)].join(eol) + eol,
      );
    const lf = text('\n', 20_000);
    const crlf = text('\r\n', 20_000);
    // a CRLF that straddles two of the pieces a file is counted in (64 KiB)
    const head = 'Subject: split\n\n';
    const split = Buffer.from(head + 'x'.repeat(65535 - head.length) + '\r\n' + 'tail\n'.repeat(5000));
    assert.equal(split[65535], 13);
    const sent = (b: Buffer) => b.length + (b.toString('latin1').match(/(?<!\r)\n/g)?.length ?? 0);
    const files: [string, Buffer, boolean][] = [
      // Postfix's virtual(8) or procmail: no sizes in the name, LF line ends
      ['1700000001.M1P1.old', lf, true],
      // as Dovecot names one: its size with CRLF line ends as W=, taken as it is
      [`1700000002.M2P1.old,S=${lf.length},W=${sent(lf)}`, lf, false],
      // as Mailyard's delivery writes one: CRLF line ends, S=
      [`1700000003.M3P1.new,S=${crlf.length}`, crlf, false],
      // S= on a file with LF line ends (Courier's maildrop): its first lines tell
      [`1700000004.M4P1.old,S=${lf.length}`, lf, true],
      ['1700000005.M5P1.old', split, true],
    ];
    for (const [name, data] of files) await fs.writeFile(join(dir, 'new', name), data);
    const blocks = await folder.readHeaders((await folder.snapshot()).messages);
    assert.deepEqual(
      blocks.map((b) => [b!.sentSize, b!.counted]),
      files.map(([, data, counted]) => [sent(data), counted]),
    );
    assert.equal(sent(lf), lf.length + 20_002);
  });
});

void describe('withCrlf', () => {
  void it('makes every bare LF CRLF and leaves the rest as it is', () => {
    const cases: [string, string][] = [
      ['', ''],
      ['\n', '\r\n'],
      ['a\nb\r\nc\rd\n\n', 'a\r\nb\r\nc\rd\r\n\r\n'],
      ['no line end', 'no line end'],
      ['\r\n\r\n', '\r\n\r\n'],
    ];
    for (const [from, to] of cases) {
      const data = Buffer.from(from, 'latin1');
      assert.equal(withCrlf(data).toString('latin1'), to);
      assert.equal(crlfSize(data), to.length);
    }
    const same = Buffer.from('a\r\nb\r\n');
    assert.equal(withCrlf(same), same);
  });
});
