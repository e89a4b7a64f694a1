import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import nodemailer from 'nodemailer';
import { Directory } from '@mailyard/directory';
import { folderDir } from '@mailyard/mailstore';
import {
  createTestRedis,
  createVhost,
  maildirNew,
  tempDir,
  waitFor,
  type TestRedis,
  type TestVhost,
} from '@mailyard/testkit';
import { freePort, startServiceProcess, type ServiceProcess } from './processes.js';

// Promise 3 of the design: any service may be SIGKILLed at any moment and every
// accepted message still arrives exactly once in each mailbox.
const MESSAGES = 1000;
const ACCOUNTS = ['u0', 'u1', 'u2', 'u3', 'u4'].map((u) => `${u}@crash.test`);

let vhost: TestVhost;
let redis: TestRedis;
let dir: ReturnType<typeof tempDir>;
let env: Record<string, string>;
const procs: ServiceProcess[] = [];

before(async () => {
  vhost = await createVhost();
  redis = createTestRedis();
  dir = tempDir();
  const d = new Directory(redis.redis);
  await d.addDomain('crash.test');
  for (const a of ACCOUNTS) await d.addUser(a, 'correct horse battery staple');
  env = {
    AMQP_URL: vhost.url,
    REDIS_PREFIX: redis.prefix,
    MAILDIR_ROOT: dir.path,
    MYHOSTNAME: 'mx.crash.test',
    SMTPD_PEERNAME_LOOKUP: 'no',
  };
});
after(async () => {
  for (const p of procs) await p.stop().catch(() => undefined);
  await redis.cleanup();
  await vhost.delete();
  dir.cleanup();
});

test(
  `${MESSAGES} messages, delivery SIGKILLed repeatedly: each arrives exactly once`,
  { timeout: 240_000 },
  async () => {
    const smtpPort = await freePort();
    const inbound = await startServiceProcess('mta-inbound', { ...env, SMTP_PORT: String(smtpPort) });
    procs.push(inbound);
    let delivery = await startServiceProcess('delivery', env);
    procs.push(delivery);

    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: smtpPort,
      pool: true,
      maxConnections: 8,
      maxMessages: Infinity,
      ignoreTLS: true,
    });
    let sent = 0;
    const sending = (async () => {
      const jobs: Promise<unknown>[] = [];
      for (let i = 0; i < MESSAGES; i++) {
        const to = ACCOUNTS[i % ACCOUNTS.length]!;
        jobs.push(
          transport
            .sendMail({
              envelope: { from: 'load@remote.test', to: [to] },
              raw: `From: load@remote.test\r\nTo: ${to}\r\nSubject: crash-${i}\r\n\r\nmessage ${i}\r\n`,
            })
            .then(() => sent++),
        );
      }
      await Promise.all(jobs);
    })();

    // Kill the delivery service five times while mail is flowing.
    let kills = 0;
    while (kills < 5) {
      await waitFor(() => sent >= (kills + 1) * (MESSAGES / 7), {
        timeoutMs: 60_000,
        what: 'progress before the next kill',
      });
      await delivery.kill();
      kills++;
      delivery = await startServiceProcess('delivery', env);
      procs.push(delivery);
    }
    await sending;
    transport.close();
    assert.equal(sent, MESSAGES);

    const files = () => ACCOUNTS.flatMap((a) => maildirNew(folderDir(dir.path, a, 'INBOX')));
    await waitFor(() => files().length >= MESSAGES, {
      timeoutMs: 120_000,
      what: `all ${MESSAGES} messages filed`,
    });
    // late duplicates would show up now
    await new Promise((r) => setTimeout(r, 1000));
    const all = files();
    const seen = new Map<string, number>();
    for (const f of all) {
      const subject = /Subject: (crash-\d+)/.exec(readFileSync(f, 'utf8'))?.[1] ?? 'missing';
      seen.set(subject, (seen.get(subject) ?? 0) + 1);
    }
    const dupes = [...seen].filter(([, n]) => n > 1);
    assert.deepEqual(dupes, [], 'duplicates');
    assert.equal(seen.size, MESSAGES);
    assert.equal(all.length, MESSAGES);
  },
);
