import { after, before, test } from 'node:test';
import { Directory } from '@mailyard/directory';
import {
  createTestRedis,
  createVhost,
  tempDir,
  waitFor,
  type TestRedis,
  type TestVhost,
} from '@mailyard/testkit';
import { assertNothingLost, startLoad } from './fault-load.js';
import { freePort, startServiceProcess, type ServiceProcess } from './processes.js';

// Promise 3 of the design, and fault (c): mta-inbound and delivery are SIGKILLed at
// any moment while 1,000 messages arrive; every message that got 250 arrives exactly
// once in its mailbox, and no client gets a 5xx (a lost connection is retried).
const COUNT = 1000;
const RECIPIENTS = ['u0', 'u1', 'u2', 'u3', 'u4'].map((u) => `${u}@crash.test`);
const FROM = 'sender@crash.test';

let vhost: TestVhost;
let redis: TestRedis;
let dir: ReturnType<typeof tempDir>;
const procs: ServiceProcess[] = [];

before(async () => {
  vhost = await createVhost();
  redis = createTestRedis();
  dir = tempDir();
  const d = new Directory(redis.redis);
  await d.addDomain('crash.test');
  for (const a of [...RECIPIENTS, FROM]) await d.addUser(a, 'correct horse battery staple');
});
after(async () => {
  for (const p of procs) await p.stop().catch(() => undefined);
  await redis?.cleanup();
  await vhost?.delete();
  dir?.cleanup();
});

test(
  `${COUNT} messages, mta-inbound and delivery SIGKILLed repeatedly: each arrives exactly once`,
  { timeout: 240_000 },
  async (t) => {
    const port = await freePort();
    const env = {
      AMQP_URL: vhost.url,
      REDIS_PREFIX: redis.prefix,
      MAILDIR_ROOT: dir.path,
      MYHOSTNAME: 'mx.crash.test',
      SMTPD_PEERNAME_LOOKUP: 'no',
    };
    const start = async (service: 'mta-inbound' | 'delivery') => {
      const p = await startServiceProcess(
        service,
        service === 'mta-inbound' ? { ...env, SMTP_PORT: String(port) } : env,
      );
      procs.push(p);
      return p;
    };
    const running = { 'mta-inbound': await start('mta-inbound'), delivery: await start('delivery') };

    const load = startLoad({ port, count: COUNT, from: FROM, recipients: RECIPIENTS, deadlineMs: 180_000 });
    // five kills spread over the load: delivery, mta-inbound, delivery, mta-inbound, delivery
    const order = ['delivery', 'mta-inbound', 'delivery', 'mta-inbound', 'delivery'] as const;
    for (const [k, service] of order.entries()) {
      await waitFor(() => load.count('accepted') >= ((k + 1) * COUNT) / 7, {
        timeoutMs: 90_000,
        what: 'progress before the next kill',
      });
      await running[service].kill();
      running[service] = await start(service);
    }
    await load.done;

    await assertNothingLost(t, 'mta-inbound and delivery killed', load, {
      maildir: dir.path,
      recipients: RECIPIENTS,
      from: FROM,
      count: COUNT,
    });
  },
);
