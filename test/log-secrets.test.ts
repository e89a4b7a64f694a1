// What a failed Redis command leaves in a log: its error, never its arguments. ioredis puts
// the command (name and arguments) on the error, and a logged error is written whole: a
// write that failed would show the value it carried (a new TOTP secret, a session's CSRF
// token).
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { createLogger } from '@mailyard/observability';
import { REDIS_URL } from '@mailyard/testkit';

const redis = new Redis(REDIS_URL, { keyPrefix: `log-secrets:${process.pid}:` });
after(() => redis.quit());

function capture(): { lines: string[]; stream: Writable } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { lines, stream };
}

test(
  'a failed command is logged with its error and name, not the values it carried',
  { timeout: 10_000 },
  async () => {
    const secret = 'JBSWY3DPEHPK3PXP-not-for-logs';
    const { lines, stream } = capture();
    const log = createLogger('log-secrets-test', 'info', stream);
    // refused by Redis (a negative expiry): nothing is written, the error carries the command
    const single = await redis.set('totp:pending', secret, 'EX', -1).catch((e: unknown) => e);
    assert.ok(single instanceof Error, 'Redis refused the SET');
    log.error({ err: single }, 'two-factor enrolment not started');
    log.warn({ account: 'a@example.test', error: single }, 'under another name too');
    const out = lines.join('');
    assert.match(out, /invalid expire time/, 'the error itself is there');
    assert.match(out, /"name":"set"/, "and the command's name");
    assert.ok(!out.includes(secret), `no argument in the log: ${out}`);
  },
);
