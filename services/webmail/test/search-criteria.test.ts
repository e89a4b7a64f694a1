// The search box's words as IMAP SEARCH keys: a field and its value belong together whether
// or not a space follows the colon (`from: alice` is `from:alice`, as in Gmail); any other
// word with a colon is searched as it is written.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { searchCriteria } from '../src/mailbox.js';

type Attr = { type: string; value: string } | Attr[];
const keys = (q: string) =>
  (searchCriteria({ q, unread: false, flagged: false }) as Attr[]).map((a) =>
    Array.isArray(a) ? a : a.value,
  );
/** What a plain word is searched as: subject, from, to or body. */
const anywhere = (w: string) => ['OR', 'OR', 'OR', 'SUBJECT', w, 'FROM', w, 'TO', w, 'BODY', w];

test('a field with a space after its colon is still that field', { timeout: 5_000 }, () => {
  assert.deepEqual(keys('from: alice'), ['FROM', 'alice']);
  assert.deepEqual(keys('from:alice'), ['FROM', 'alice']);
  assert.deepEqual(keys('To:   bob@example.test'), ['TO', 'bob@example.test']);
  assert.deepEqual(keys('subject: "weekly report"'), ['SUBJECT', 'weekly report']);
  assert.deepEqual(keys('cc: carol is: unread'), ['CC', 'carol', 'UNSEEN']);
  assert.deepEqual(keys('invoice from: alice'), [...anywhere('invoice'), 'FROM', 'alice']);
});

test('a field followed by another takes no value: the other stands', { timeout: 5_000 }, () => {
  assert.deepEqual(keys('subject: is:unread'), ['UNSEEN']);
  assert.deepEqual(keys('from:   to: bob'), ['TO', 'bob']);
  assert.deepEqual(keys('subject: from: alice report'), ['FROM', 'alice', ...anywhere('report')]);
  // a word that only ends like a field is a value
  assert.deepEqual(keys('subject: xis:unread'), ['SUBJECT', 'xis:unread']);
});

test('other words with a colon are searched as written', { timeout: 5_000 }, () => {
  assert.deepEqual(keys('re:meeting'), anywhere('re:meeting'));
  assert.deepEqual(keys('re: meeting'), [...anywhere('re:'), ...anywhere('meeting')]);
  assert.deepEqual(keys('xfrom: alice'), [...anywhere('xfrom:'), ...anywhere('alice')]);
  // a field with nothing after it is a word
  assert.deepEqual(keys('from:'), anywhere('from:'));
});
