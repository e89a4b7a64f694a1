import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HEADER_LINES_LIMIT, HEADER_SIZE_LIMIT, HOPCOUNT_LIMIT, headerRefusal } from '../src/index.js';

const received = (n: number) =>
  Array.from(
    { length: n },
    (_, i) => `Received: from hop${i}.example by mx.example; Sat, 5 Dec 2026\r\n`,
  ).join('');
const message = (header: string, body = 'hello\r\n') =>
  Buffer.from(`${header}From: <a@example.test>\r\nSubject: hi\r\n\r\n${body}`, 'latin1');
const refused = (m: Buffer) => headerRefusal(m)?.line ?? null;

test('an ordinary message, and one without a body, pass', () => {
  assert.equal(refused(message(received(3))), null);
  assert.equal(refused(Buffer.from('Subject: no body\r\n')), null);
  assert.equal(refused(Buffer.from('\r\nonly a body\r\n')), null);
});

test('past the hop count limit a message is in a loop: 554 5.4.6', () => {
  assert.equal(refused(message(received(HOPCOUNT_LIMIT))), null);
  assert.equal(refused(message(received(HOPCOUNT_LIMIT + 1))), '554 5.4.6 Error: too many hops');
  // any case; and what the body says is not counted
  assert.equal(
    refused(message(received(HOPCOUNT_LIMIT + 1).replace(/Received/g, 'RECEIVED'))),
    '554 5.4.6 Error: too many hops',
  );
  assert.equal(refused(message(received(3), received(200))), null);
});

test('a header section past its size or its lines is refused: 552 5.3.4', () => {
  const tooLarge = '552 5.3.4 Error: message header too large';
  assert.equal(refused(message(`X-Big: ${'x'.repeat(HEADER_SIZE_LIMIT)}\r\n`)), tooLarge);
  assert.equal(refused(Buffer.from(`X-Big: ${'x'.repeat(HEADER_SIZE_LIMIT + 1)}`)), tooLarge);
  // exactly the limit passes (message() adds From and Subject)
  const folded = (n: number) => `X-Folded: a\r\n${' b\r\n'.repeat(n)}`;
  assert.equal(refused(message(folded(HEADER_LINES_LIMIT - 3))), null);
  assert.equal(refused(message(folded(HEADER_LINES_LIMIT - 2))), tooLarge);
  // a line of junk first hides nothing: the section runs to the empty line
  assert.equal(refused(message(`junk\r\n${folded(HEADER_LINES_LIMIT)}`)), tooLarge);
  // a long body is no header
  assert.equal(refused(message('', 'line\r\n'.repeat(100_000))), null);
});
