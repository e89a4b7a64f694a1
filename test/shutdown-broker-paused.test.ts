// Promise 9 with a broker that stopped answering: RabbitMQ paused (SIGSTOP) keeps its
// connections open and answers nothing, not the consumers' cancels nor the close. Each
// service must still exit 0 within SHUTDOWN_GRACE, and nothing the broker confirmed is
// lost: deliveries not acked when the connection is cut go back to the queue.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { Bus } from '@mailyard/bus';
import { RoutingKeys } from '@mailyard/contracts';
import { Directory } from '@mailyard/directory';
import { folderDir } from '@mailyard/mailstore';
import { createLogger } from '@mailyard/observability';
import {
  createTestRedis,
  maildirNew,
  startPrivateRabbit,
  tempDir,
  waitFor,
  type PrivateRabbit,
  type TestRedis,
} from '@mailyard/testkit';
import { envelope, simpleMessage } from '../services/outbound-relay/test/helpers.js';
import { freePort, startServiceProcess, type ServiceProcess } from './processes.js';

const GRACE_MS = 3000;
/** What the test allows beyond the grace period: the exit itself, on a busy machine. */
const EXIT_SLACK_MS = 5000;
const COUNT = 1000;
const USER = 'user@paused.test';

let rabbit: PrivateRabbit;
let redis: TestRedis;
let dir: ReturnType<typeof tempDir>;
const procs: ServiceProcess[] = [];

before(async () => {
  rabbit = await startPrivateRabbit();
  redis = createTestRedis();
  dir = tempDir();
  const d = new Directory(redis.redis);
  await d.addDomain('paused.test');
  await d.addUser(USER, 'correct horse battery staple');
});
after(async () => {
  rabbit?.resume();
  for (const p of procs) await p.stop().catch(() => undefined);
  await rabbit?.close();
  await redis?.cleanup();
  dir?.cleanup();
});

test(
  'RabbitMQ paused: delivery and mta-inbound exit 0 within the grace period; every confirmed message is filed once',
  { timeout: 240_000 },
  async () => {
    const bus = new Bus({ url: rabbit.url, logger: createLogger('test', 'silent'), name: 'paused-test' });
    bus.start();
    await bus.waitConnected(30_000);
    await Promise.all(
      Array.from({ length: COUNT }, (_, i) =>
        bus.publishMail(
          RoutingKeys.delivery,
          Buffer.from(simpleMessage('sender@remote.test', USER, `paused-${i}`)),
          envelope('sender@remote.test', [USER]),
        ),
      ),
    );
    await bus.stop();

    const env = {
      AMQP_URL: rabbit.url,
      REDIS_PREFIX: redis.prefix,
      MAILDIR_ROOT: dir.path,
      MYHOSTNAME: 'mx.paused.test',
      SMTPD_PEERNAME_LOOKUP: 'no',
      SHUTDOWN_GRACE: `${GRACE_MS}ms`,
    };
    const inbound = await startServiceProcess('mta-inbound', { ...env, SMTP_PORT: String(await freePort()) });
    procs.push(inbound);
    const inbox = () => maildirNew(folderDir(dir.path, USER, 'INBOX'));
    const subjects = () =>
      inbox().flatMap((f) => /^Subject: (paused-\d+)/m.exec(readFileSync(f, 'utf8'))?.[1] ?? []);
    const delivery = await startServiceProcess('delivery', env);
    procs.push(delivery);
    await waitFor(() => subjects().length > 0, { timeoutMs: 60_000, what: 'delivery under way' });

    rabbit.pause();
    const ends = await Promise.all([inbound, delivery].map((p) => p.terminate()));
    for (const [p, end] of [
      [inbound, ends[0]!],
      [delivery, ends[1]!],
    ] as const) {
      assert.deepEqual({ code: end.code, signal: end.signal }, { code: 0, signal: null }, p.output());
      assert.ok(end.ms < GRACE_MS + EXIT_SLACK_MS, `exited ${end.ms} ms after SIGTERM: ${p.output()}`);
    }

    rabbit.resume();
    procs.push(await startServiceProcess('delivery', env));
    await waitFor(() => subjects().length >= COUNT, { timeoutMs: 120_000, what: 'every message filed' });
    assert.equal(subjects().length, COUNT, 'each message exactly once');
    assert.equal(new Set(subjects()).size, COUNT);
  },
);
