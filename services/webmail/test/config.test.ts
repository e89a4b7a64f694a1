// Bad settings stop the webmail with a sentence naming the key.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ConfigError } from '@mailyard/config';
import { loadConfig } from '@mailyard/config';
import { webmailSchema } from '../src/index.js';

test('bad values are refused naming their keys, all at once', () => {
  assert.throws(
    () =>
      loadConfig(webmailSchema, {
        env: {
          IMAP_SERVER: 'retrieval',
          SUBMISSION_SERVER: 'msa:465 msa2:465',
          WEBMAIL_PORT: 'https',
          SESSION_IDLE_TIMEOUT: 'soon',
        },
      }),
    (err: ConfigError) => {
      assert.deepEqual(err.problems.map((p) => p.split(':')[0]).sort(), [
        'IMAP_SERVER',
        'SESSION_IDLE_TIMEOUT',
        'SUBMISSION_SERVER',
        'WEBMAIL_PORT',
      ]);
      return true;
    },
  );
  const ok = loadConfig(webmailSchema, {
    env: { IMAP_SERVER: 'retrieval:993', SERVICE_LOGIN_PASSWORD: 'x'.repeat(16) },
  });
  assert.deepEqual(ok.imap_server, ['retrieval:993']);
  assert.throws(
    () => loadConfig(webmailSchema, { env: { SERVICE_LOGIN_PASSWORD: 'short' } }),
    /SERVICE_LOGIN_PASSWORD: expected a random secret/,
  );
  assert.throws(
    () => loadConfig(webmailSchema, { env: { SERVICE_LOGIN_NAME: 'me@example.org' } }),
    /SERVICE_LOGIN_NAME: /,
  );
});

test('without the service login secret the webmail does not start, and says which key', () => {
  assert.throws(
    () => loadConfig(webmailSchema, { env: {} }),
    (err: ConfigError) => {
      assert.deepEqual(err.problems, [
        'SERVICE_LOGIN_PASSWORD: the webmail needs the service login secret that retrieval and msa accept (or SERVICE_LOGIN_PASSWORD_FILE)',
      ]);
      return true;
    },
  );
});
