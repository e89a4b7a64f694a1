// Settings of retrieval that are read before anything starts: a bad value stops the
// service with a sentence naming the key.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '@mailyard/config';
import { retrievalSchema } from '../src/index.js';

test(
  'imap_max_literal_before_login: 8 KiB unless set, sizes with units, bad values named',
  { timeout: 10_000 },
  () => {
    assert.equal(loadConfig(retrievalSchema, { env: {} }).imap_max_literal_before_login, 8192);
    assert.equal(
      loadConfig(retrievalSchema, { env: { IMAP_MAX_LITERAL_BEFORE_LOGIN: '16K' } })
        .imap_max_literal_before_login,
      16384,
    );
    for (const bad of ['0', 'lots', '-1', '1.5K'])
      assert.throws(
        () => loadConfig(retrievalSchema, { env: { IMAP_MAX_LITERAL_BEFORE_LOGIN: bad } }),
        (err: unknown) =>
          err instanceof ConfigError &&
          err.problems.length === 1 &&
          err.problems[0]!.startsWith('IMAP_MAX_LITERAL_BEFORE_LOGIN: '),
        bad,
      );
  },
);
