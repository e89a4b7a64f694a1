// The text of a refusal is read by people (the sender's bounce, a postmaster's log): a
// count agrees with its noun; the codes before it are what programs read.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { policyReply } from '@mailyard/policy-rules';

test('a greylisting refusal says 1 second, and 300 seconds', () => {
  assert.equal(
    policyReply.greylisted('alice@example.test', 1).text,
    '<alice@example.test>: Recipient address rejected: Greylisted, try again in 1 second',
  );
  assert.equal(
    policyReply.greylisted('alice@example.test', 300).text,
    '<alice@example.test>: Recipient address rejected: Greylisted, try again in 300 seconds',
  );
  assert.equal(
    policyReply.spamGreylisted(1).text,
    'Error: greylisted by the spam filter, try again in 1 second',
  );
  assert.equal(
    policyReply.spamGreylisted(2).text,
    'Error: greylisted by the spam filter, try again in 2 seconds',
  );
});
