import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { inspectLineEndings, normalizeLineEndings } from '../src/index.js';

const b = (s: string) => Buffer.from(s, 'latin1');

test('clean CRLF message: no bare line endings', () => {
  assert.deepEqual(inspectLineEndings(b('Subject: x\r\n\r\nhello\r\n..\r\n.x\r\n')), {
    bare: false,
    smuggling: false,
  });
});

for (const s of ['a\n.\nb', 'a\n.\r\nb', 'a\r\n.\nb', 'a\r.\rb', 'a\r\n.\rb', '.\nMAIL FROM:<x@y>']) {
  test(`smuggling pattern detected: ${JSON.stringify(s)}`, () => {
    assert.equal(inspectLineEndings(b(s)).smuggling, true);
  });
}

test('bare LF without a dot line is only "bare"', () => {
  assert.deepEqual(inspectLineEndings(b('a\nb\n')), { bare: true, smuggling: false });
});

test('normalizing leaves only CRLF line endings', () => {
  fc.assert(
    fc.property(fc.array(fc.constantFrom('a', '.', '\r', '\n', '\r\n', 'x y')), (parts) => {
      const out = normalizeLineEndings(b(parts.join(''))).toString('latin1');
      assert.equal(/\r(?!\n)|(?<!\r)\n/.test(out), false);
      assert.equal(inspectLineEndings(b(out)).bare, false);
    }),
  );
});
