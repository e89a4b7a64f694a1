import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { Directory } from '@mailyard/directory';
import {
  createVhost,
  startPrivateRedis,
  tempDir,
  waitFor,
  type PrivateRedis,
  type TestVhost,
} from '@mailyard/testkit';
import { assertNothingLost, startLoad } from './fault-load.js';
import { freePort, startServiceProcess, type ServiceProcess } from './processes.js';

// Fault (a): Redis, which holds the directory, is killed while 1,000 messages arrive and
// started again (its data persisted, as in production). Clients may see 4xx meanwhile,
// never a 5xx for a valid recipient; every 250 is filed exactly once or bounced.
const COUNT = 1000;
const RECIPIENTS = ['u0', 'u1', 'u2', 'u3', 'u4'].map((u) => `${u}@fault.test`);
const FROM = 'sender@fault.test';

let redis: PrivateRedis;
let vhost: TestVhost;
let dir: ReturnType<typeof tempDir>;
const procs: ServiceProcess[] = [];

before(async () => {
  redis = await startPrivateRedis();
  vhost = await createVhost();
  dir = tempDir();
  const admin = new Redis(redis.port, '127.0.0.1', { keyPrefix: 'mailyard:' });
  const d = new Directory(admin);
  await d.addDomain('fault.test');
  for (const a of [...RECIPIENTS, FROM]) await d.addUser(a, 'correct horse battery staple');
  admin.disconnect();
});
after(async () => {
  for (const p of procs) await p.stop().catch(() => undefined);
  await redis?.close();
  await vhost?.delete();
  dir?.cleanup();
});

test(
  `${COUNT} messages, Redis killed and started again: nothing accepted is lost`,
  { timeout: 180_000 },
  async (t) => {
    const port = await freePort();
    const env = {
      AMQP_URL: vhost.url,
      REDIS_URL: redis.url,
      MAILDIR_ROOT: dir.path,
      MYHOSTNAME: 'mx.fault.test',
      SMTPD_PEERNAME_LOOKUP: 'no',
    };
    procs.push(await startServiceProcess('mta-inbound', { ...env, SMTP_PORT: String(port) }));
    procs.push(await startServiceProcess('delivery', env));

    const load = startLoad({ port, count: COUNT, from: FROM, recipients: RECIPIENTS });
    await waitFor(() => load.count('accepted') >= COUNT / 4, { timeoutMs: 60_000, what: 'load under way' });
    await redis.kill();
    // down until the clients have felt it
    await waitFor(() => load.count('tempfailed') >= 10, {
      timeoutMs: 60_000,
      what: 'tempfails while Redis is down',
    });
    await redis.start();
    await load.done;

    const tally = await assertNothingLost(t, 'redis blip', load, {
      maildir: dir.path,
      recipients: RECIPIENTS,
      from: FROM,
      count: COUNT,
    });
    assert.ok(tally.tempfailed > 0, 'the outage was felt');
  },
);
