import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Bus } from '@mailyard/bus';
import { Directory } from '@mailyard/directory';
import { createLogger } from '@mailyard/observability';
import {
  createTestRedis,
  startPrivateRabbit,
  tempDir,
  waitFor,
  type PrivateRabbit,
  type TestRedis,
} from '@mailyard/testkit';
import { assertNothingLost, startLoad } from './fault-load.js';
import { freePort, startServiceProcess, type ServiceProcess } from './processes.js';

// Fault (b): the broker is killed with SIGKILL while 1,000 messages arrive and started
// again on the same Mnesia directory. Clients may see 4xx meanwhile, never a 5xx; every
// 250 was confirmed into a quorum queue, so it is filed exactly once after the restart.
const COUNT = 1000;
const RECIPIENTS = ['u0', 'u1', 'u2', 'u3', 'u4'].map((u) => `${u}@fault.test`);
const FROM = 'sender@fault.test';

let rabbit: PrivateRabbit;
let redis: TestRedis;
let dir: ReturnType<typeof tempDir>;
const procs: ServiceProcess[] = [];

before(async () => {
  rabbit = await startPrivateRabbit();
  redis = createTestRedis();
  dir = tempDir();
  const d = new Directory(redis.redis);
  await d.addDomain('fault.test');
  for (const a of [...RECIPIENTS, FROM]) await d.addUser(a, 'correct horse battery staple');
  // declare the topology, then restart cleanly so the node has its quorum queues on
  // disk for good, as a broker that has been running would (see PrivateRabbit)
  const bus = new Bus({ url: rabbit.url, logger: createLogger('fault', 'silent'), name: 'topology' });
  bus.start();
  await bus.waitConnected(30_000);
  await bus.stop();
  await rabbit.stop();
  await rabbit.start();
});
after(async () => {
  for (const p of procs) await p.stop().catch(() => undefined);
  await rabbit?.close();
  await redis?.cleanup();
  dir?.cleanup();
});

test(
  `${COUNT} messages, RabbitMQ SIGKILLed and restarted: nothing accepted is lost`,
  { timeout: 240_000 },
  async (t) => {
    const port = await freePort();
    const env = {
      AMQP_URL: rabbit.url,
      REDIS_PREFIX: redis.prefix,
      MAILDIR_ROOT: dir.path,
      MYHOSTNAME: 'mx.fault.test',
      SMTPD_PEERNAME_LOOKUP: 'no',
    };
    procs.push(await startServiceProcess('mta-inbound', { ...env, SMTP_PORT: String(port) }));
    procs.push(await startServiceProcess('delivery', env));

    const load = startLoad({ port, count: COUNT, from: FROM, recipients: RECIPIENTS, deadlineMs: 150_000 });
    await waitFor(() => load.count('accepted') >= COUNT / 4, { timeoutMs: 60_000, what: 'load under way' });
    await rabbit.kill();
    await waitFor(() => load.count('tempfailed') >= 10, {
      timeoutMs: 60_000,
      what: 'tempfails while the broker is down',
    });
    await rabbit.start();
    await load.done;

    const tally = await assertNothingLost(t, 'broker kill', load, {
      maildir: dir.path,
      recipients: RECIPIENTS,
      from: FROM,
      count: COUNT,
    });
    assert.ok(tally.tempfailed > 0, 'the outage was felt');
  },
);
