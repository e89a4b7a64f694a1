// The text of a reply is read by people: a count agrees with its noun.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { reply } from '../src/index.js';

test('a locked login says 1 second, and 30 seconds', () => {
  assert.equal(reply.authLocked(1).line, '454 4.7.0 Too many failed login attempts, try again in 1 second');
  assert.equal(
    reply.authLocked(30).line,
    '454 4.7.0 Too many failed login attempts, try again in 30 seconds',
  );
});
