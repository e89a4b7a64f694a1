// The sentences the webmail answers with, counted as they are read: 1 second, not 1 seconds.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { errors } from '../src/errors.js';

test('a wait of one second is said as one second, longer ones in seconds', { timeout: 5_000 }, () => {
  assert.equal(errors.locked(1).message, 'Too many failed login attempts, try again in 1 second');
  assert.equal(errors.locked(90).message, 'Too many failed login attempts, try again in 90 seconds');
  assert.equal(errors.rateLimited(1).message, 'Too many login attempts, try again in 1 second');
  assert.equal(errors.rateLimited(42).message, 'Too many login attempts, try again in 42 seconds');
});
