// How a NO from the IMAP store reads in the API: the codes a user can act on have their
// own answers, the rest is the store's sentence.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiError, UpstreamError, fromImapRefusal } from '../src/errors.js';

/** imapflow's error for a tagged NO. */
const no = (code: string | undefined, text: string) => ({
  responseStatus: 'NO',
  serverResponseCode: code,
  responseText: code ? `[${code}] ${text}` : text,
});

test('a NO of the store is answered by what it means to the user', { timeout: 5_000 }, () => {
  const answer = (err: unknown) => {
    const e = fromImapRefusal(err);
    return e instanceof ApiError ? [e.status, e.code] : e instanceof UpstreamError ? 'temporary' : e;
  };
  assert.deepEqual(answer(no('OVERQUOTA', 'Quota exceeded')), [507, 'over_quota']);
  assert.deepEqual(answer(no('TRYCREATE', 'Mailbox does not exist')), [404, 'no_such_folder']);
  // COPY or MOVE of a message another client expunged: nothing moved, the message is gone
  assert.deepEqual(answer(no('EXPUNGEISSUED', 'Some of the requested messages no longer exist')), [
    404,
    'no_such_message',
  ]);
  assert.deepEqual(answer(no('ALREADYEXISTS', 'Mailbox already exists')), [409, 'folder_exists']);
  assert.deepEqual(answer(no('NONEXISTENT', 'No such mailbox')), [404, 'no_such_folder']);
  assert.equal(answer(no('UNAVAILABLE', 'Try again')), 'temporary');
  assert.deepEqual(answer(no(undefined, 'Not today')), [409, 'refused']);
  assert.equal(answer({ responseStatus: 'BAD' }), null);
});
