import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connect } from 'amqplib';
import { Redis } from 'ioredis';
import { Queues } from '@mailyard/contracts';
import { Directory } from '@mailyard/directory';
import {
  RawSmtp,
  createVhost,
  startPrivateRedis,
  waitFor,
  type PrivateRedis,
  type TestVhost,
} from '@mailyard/testkit';
import { freePort, startServiceProcess, type ServiceProcess } from './processes.js';

// mta-inbound and msa as processes, their Redis a redis-server of the test's own that
// the test kills: a recipient lookup that fails is 451 4.3.0, never "relay denied",
// never "no such user", and never mail for a local user queued as outbound.
const PASSWORD = 'correct horse battery staple';
let redis: PrivateRedis;
let vhost: TestVhost;
const procs: ServiceProcess[] = [];
let smtpPort: number;
let submissionsPort: number;

before(async () => {
  redis = await startPrivateRedis();
  vhost = await createVhost();
  const admin = new Redis(redis.port, '127.0.0.1', { keyPrefix: 'mailyard:' });
  const dir = new Directory(admin);
  await dir.addDomain('example.test');
  await dir.addUser('alice@example.test', PASSWORD);
  await dir.addUser('bob@example.test', PASSWORD);
  admin.disconnect();
  [smtpPort, submissionsPort] = [await freePort(), await freePort()];
  const env = {
    AMQP_URL: vhost.url,
    REDIS_URL: redis.url,
    MYHOSTNAME: 'mx.example.test',
    SMTPD_PEERNAME_LOOKUP: 'no',
    MYNETWORKS: '127.0.0.1/32',
  };
  procs.push(await startServiceProcess('mta-inbound', { ...env, SMTP_PORT: String(smtpPort) }));
  procs.push(
    await startServiceProcess('msa', {
      ...env,
      SUBMISSION_PORT: String(await freePort()),
      SUBMISSIONS_PORT: String(submissionsPort),
    }),
  );
});
after(async () => {
  for (const p of procs) await p.stop().catch(() => undefined);
  await redis?.close();
  await vhost?.delete();
});

/** An SMTP command whose reply may wait for Redis to time out. */
const slowCmd = async (c: RawSmtp, line: string) => {
  c.write(`${line}\r\n`);
  return c.read(30_000);
};

test(
  'mta-inbound: with Redis down a valid local recipient gets 451 4.3.0, inside and outside mynetworks',
  { timeout: 90_000 },
  async () => {
    const inside = await RawSmtp.connect(smtpPort, '127.0.0.1', { localAddress: '127.0.0.1' });
    const outside = await RawSmtp.connect(smtpPort, '127.0.0.1', { localAddress: '127.0.0.5' });
    try {
      for (const c of [inside, outside]) {
        assert.equal((await c.read()).code, 220);
        assert.equal((await c.cmd('EHLO client.example.net')).code, 250);
        assert.equal((await c.cmd('MAIL FROM:<someone@remote.test>')).code, 250);
      }
      await redis.kill();
      // from mynetworks this was 250 and the message queued to outbound, "relayed" to alice
      const a = await slowCmd(inside, 'RCPT TO:<alice@example.test>');
      assert.match(a.text, /^451 4\.3\.0 /, a.text);
      // from outside this was 554 5.7.1 Relay access denied
      const b = await slowCmd(outside, 'RCPT TO:<alice@example.test>');
      assert.match(b.text, /^451 4\.3\.0 /, b.text);
    } finally {
      await redis.start();
    }
    // once Redis is back the same recipient is accepted and routed to delivery
    const r = await waitFor(
      async () => {
        const x = await slowCmd(inside, 'RCPT TO:<alice@example.test>');
        return x.code === 250 ? x : null;
      },
      { timeoutMs: 30_000, what: 'RCPT accepted again' },
    );
    assert.equal(r.code, 250);
    assert.equal((await inside.cmd('DATA')).code, 354);
    assert.equal((await slowCmd(inside, 'Subject: back\r\n\r\nhello\r\n.')).code, 250);
    inside.close();
    outside.close();
    const conn = await connect(vhost.url);
    const ch = await conn.createChannel();
    assert.equal((await ch.checkQueue(Queues.outbound)).messageCount, 0, 'nothing queued as outbound');
    assert.equal((await ch.checkQueue(Queues.delivery)).messageCount, 1);
    await ch.purgeQueue(Queues.delivery);
    await conn.close();
  },
);

test(
  'msa: with Redis down a local recipient gets 451 4.3.0, not 550 5.1.1',
  { timeout: 90_000 },
  async () => {
    const c = await RawSmtp.connectTls(submissionsPort);
    try {
      assert.equal((await c.read()).code, 220);
      assert.equal((await c.cmd('EHLO laptop')).code, 250);
      const token = Buffer.from(`\0alice@example.test\0${PASSWORD}`).toString('base64');
      assert.equal((await slowCmd(c, `AUTH PLAIN ${token}`)).code, 235);
      assert.equal((await c.cmd('MAIL FROM:<alice@example.test>')).code, 250);
      await redis.kill();
      const r = await slowCmd(c, 'RCPT TO:<bob@example.test>');
      assert.match(r.text, /^451 4\.3\.0 /, r.text);
    } finally {
      await redis.start();
      c.close();
    }
  },
);
