// The requests of the Postfix policy delegation protocol, read as their bytes come: a
// request sent a byte at a time (a read for each) costs no more than one sent at once.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RequestReader } from '../src/delegation.js';

/** Pushes `text` in pieces of `size`, taking requests as the server does after each read. */
async function readInPieces(text: string, size: number): Promise<string[]> {
  const reader = new RequestReader();
  const got: string[] = [];
  for (let at = 0; at < text.length; at += size) {
    reader.push(text.slice(at, at + size));
    for (let r = reader.take(); r !== undefined; r = reader.take()) got.push(r);
    // the server asks after every read whether the request being read is too large
    assert.ok(reader.partial <= text.length);
    // the test's timeout can end it meanwhile
    if ((at / size) % 10_000 === 0) await new Promise((r) => setImmediate(r));
  }
  return got;
}

test('requests ended by any form of empty line read the same however the bytes are cut', async () => {
  const requests = ['a=1\nb=2', 'c=3\r\nd=4', 'e=5', 'f=6\r\ng=7', 'h=8'];
  const ends = ['\n\n', '\r\n\r\n', '\n\r\n', '\r\n\n', '\n\n'];
  const text = requests.map((r, i) => r + ends[i]).join('') + 'i=9\r\n';
  for (let size = 1; size <= text.length; size++)
    assert.deepEqual(await readInPieces(text, size), requests, `in pieces of ${size}`);
  const reader = new RequestReader();
  reader.push(text);
  for (const r of requests) assert.equal(reader.take(), r);
  assert.equal(reader.partial, 'i=9\r\n'.length, 'the request not ended yet');
});

test(
  'requests near the size limit, sent a character at a time, are read as fast as sent at once',
  { timeout: 30_000 },
  async () => {
    // a request of 60 KiB costs the whole-buffer search about 2 s: 64 of them, minutes
    const request = (i: number) =>
      `request=smtpd_access_policy\r\ninstance=${i}\r\nccert_subject=${'x'.repeat(60 * 1024)}`;
    const requests = Array.from({ length: 64 }, (_, i) => request(i));
    const got = await readInPieces(requests.map((r) => `${r}\r\n\r\n`).join(''), 1);
    assert.equal(got.length, requests.length);
    got.forEach((r, i) => assert.ok(r === requests[i], `request ${i} as sent`));
  },
);
