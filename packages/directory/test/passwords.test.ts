// A password check answers true for the right password and false for a wrong one or a
// stored value that is no hash (test/lazy-imports.test.ts: a hashing module that cannot be
// loaded is an error instead).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hashPassword, verifyPassword } from '../src/passwords.js';

test(
  'the right password is true, a wrong one or a value that is no hash false',
  { timeout: 60_000 },
  async () => {
    const stored = await hashPassword('correct horse battery staple');
    assert.equal(await verifyPassword(stored, 'correct horse battery staple'), true);
    assert.equal(await verifyPassword(stored, 'correct horse battery stapl'), false);
    assert.equal(await verifyPassword('not a hash', 'correct horse battery staple'), false);
  },
);
