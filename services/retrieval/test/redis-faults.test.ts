// Redis failing under a logged-in session: the commands that need it (APPEND, which reads
// the account's quota, and GETQUOTAROOT) answer NO [UNAVAILABLE] (RFC 5530: a subsystem is
// down, try again later), not NO [SERVERBUG], which says the server is broken and counts
// toward the disconnect of a client that keeps failing. Redis at its maxmemory refuses no
// login: the POP3 mailbox lock is still taken.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Directory } from '@mailyard/directory';
import { startPrivateRedis, type PrivateRedis } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, startRetrieval, type Retrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

const USER = 'redis-fault@example.test';
const PREFIX = 'mailyard:';
let p: Platform;
let redis: PrivateRedis;
let r: Retrieval;
before(async () => {
  p = await startPlatform({ withDelivery: false });
  redis = await startPrivateRedis();
  await addAccount(new Directory(redis.client({ keyPrefix: PREFIX })), USER);
  r = await startRetrieval(p, { redis_url: redis.url, redis_prefix: PREFIX });
});
after(async () => {
  await r?.stop();
  await redis?.close();
  await p?.close();
});

test(
  'commands that need a failing Redis answer NO [UNAVAILABLE] and end no session',
  { timeout: 30_000 },
  async () => {
    const c = await RawImap.connect(r.ports.imap);
    await c.until(/^\* OK/m);
    assert.match(await c.cmd('l', `LOGIN ${USER} "${PASSWORD}"`), /^l OK/m);
    const append = (tag: string) => c.cmd(tag, 'APPEND INBOX {12+}\r\nSubject: x\r\n');
    // the account's quota is read from Redis, which now answers it with an error
    await redis.refuse(['hget']);
    // more than imap_max_bad_commands (10) in a row
    for (let i = 1; i <= 12; i++)
      assert.match(await append(`a${i}`), new RegExp(`^a${i} NO \\[UNAVAILABLE\\] `, 'm'));
    assert.match(await c.cmd('q', 'GETQUOTAROOT INBOX'), /^q NO \[UNAVAILABLE\] /m);
    assert.match(await c.cmd('n', 'NOOP'), /^n OK/m);
    c.socket.destroy();
  },
);

test(
  'Redis full (maxmemory): IMAP and POP3 logins go on, the POP3 mailbox still locked for one session',
  { timeout: 30_000 },
  async () => {
    await redis.whileFull(async () => {
      const imap = await RawImap.connect(r.ports.imap);
      await imap.until(/^\* OK/m);
      assert.match(await imap.cmd('l', `LOGIN ${USER} "${PASSWORD}"`), /^l OK/m);
      imap.socket.destroy();

      const pop3Login = async () => {
        const c = await RawImap.connect(r.ports.pop3);
        await c.until(/^\+OK/m);
        c.send(`USER ${USER}\r\n`);
        await c.until(/^(\+OK|-ERR)/m);
        c.send(`PASS ${PASSWORD}\r\n`);
        return { c, answer: await c.until(/^(\+OK|-ERR)/m) };
      };
      const first = await pop3Login();
      assert.match(first.answer, /^\+OK Logged in/m);
      // RFC 1939 §8: one session at a time per mailbox, over every instance
      const second = await pop3Login();
      assert.match(second.answer, /^-ERR \[IN-USE\] /m);
      second.c.socket.destroy();
      first.c.send('QUIT\r\n');
      await first.c.until(/^\+OK/m);
      first.c.socket.destroy();
    });
  },
);
