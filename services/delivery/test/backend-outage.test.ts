import assert from 'node:assert/strict';
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { connect, type Channel, type ChannelModel } from 'amqplib';
import { Redis } from 'ioredis';
import { loadConfig } from '@mailyard/config';
import { ENVELOPE_HEADER, Queues, RoutingKeys, delayQueue, type Envelope } from '@mailyard/contracts';
import { Directory } from '@mailyard/directory';
import { MailRules } from '@mailyard/mail-rules';
import { folderDir, MailAccount, Quotas } from '@mailyard/mailstore';
import { createRuntime, type Runtime } from '@mailyard/runtime';
import {
  createVhost,
  maildirMessages,
  maildirNew,
  queueDepths,
  startPrivateRedis,
  testBootSettings,
  tempDir,
  waitFor,
  type PrivateRedis,
  type TestVhost,
} from '@mailyard/testkit';
import { buildDelivery, defaultDeps, deliverySchema, type DeliveryService } from '../src/index.js';
import { envelope } from './envelope.js';

// Delivery with its Redis (directory, markers) on a redis-server the test kills: the
// message must be held, neither forwarded as if the address were remote, nor
// dead-lettered after delivery_max_attempts, and filed once when Redis is back.
let vhost: TestVhost;
let redis: PrivateRedis;
let maildir: ReturnType<typeof tempDir>;
let rt: Runtime;
let svc: DeliveryService;
/** The test's own view of the vhost's queues. */
let conn: ChannelModel;
let ch: Channel;
/** While set, the mail store fails every write with this error code (a full disk: ENOSPC). */
let storeFails: string | null = null;
/** When set, the next "delivered" or "forwarded" marker fails to be set after this runs (a Redis blip). */
let markFails: (() => Promise<void>) | null = null;

before(async () => {
  vhost = await createVhost();
  conn = await connect(vhost.url);
  ch = await conn.createChannel();
  redis = await startPrivateRedis();
  maildir = tempDir();
  const admin = new Redis(redis.port, '127.0.0.1', { keyPrefix: 'mailyard:' });
  const dir = new Directory(admin);
  await dir.addDomain('example.test');
  await dir.addUser('alice@example.test', 'correct horse battery staple');
  await dir.addUser('bob@example.test', 'correct horse battery staple');
  await dir.addUser('carol@example.test', 'correct horse battery staple');
  await dir.addUser('dan@example.test', 'correct horse battery staple');
  await dir.addUser('erin@example.test', 'correct horse battery staple');
  await dir.addUser('frank@example.test', 'correct horse battery staple');
  await dir.addUser('gina@example.test', 'correct horse battery staple');
  await dir.addUser('holly@example.test', 'correct horse battery staple');
  await dir.addUser('ivan@example.test', 'correct horse battery staple');
  await dir.addUser('judy@example.test', 'correct horse battery staple');
  await dir.addUser('kim@example.test', 'correct horse battery staple');
  admin.disconnect();
  const cfg = loadConfig(deliverySchema, {
    env: {},
    overrides: {
      ...testBootSettings(vhost.url, redis.url),
      maildir_root: maildir.path,
      delivery_max_attempts: 2,
      delivery_retry_schedule: '1s',
    },
  });
  rt = await createRuntime('delivery', cfg);
  // the wiring of production: the lookup cache on; Redis through markFails (see below)
  const deps = defaultDeps(cfg, rt);
  const redisEval = deps.redis.eval.bind(deps.redis) as (...a: unknown[]) => Promise<unknown>;
  // the markers are written by scripts: KEYS[1] the marker, ARGV[1] its value (a settled
  // copy's script also deletes its "delivering" marker, which stays when it fails)
  const redisWithFaults = new Proxy(deps.redis, {
    get: (target, prop, receiver) => {
      if (prop !== 'eval') return Reflect.get(target, prop, receiver) as unknown;
      return async (...a: unknown[]) => {
        const fail = markFails;
        const keys = Number(a[1]);
        if (fail && /^(delivered|forwarded):/.test(String(a[2])) && a[2 + keys] === '1') {
          markFails = null;
          await fail();
          throw new Error('Connection is closed.');
        }
        return redisEval(...a);
      };
    },
  });
  // a disk that fills up cannot be had on demand here
  const deliverToStore = deps.store.deliver.bind(deps.store);
  deps.store.deliver = async (req) => {
    if (storeFails) throw Object.assign(new Error(`${storeFails}: write`), { code: storeFails });
    return deliverToStore(req);
  };
  svc = buildDelivery(cfg, { ...deps, redis: redisWithFaults });
  // as runMain adds them
  for (const check of svc.readiness) rt.ops.addCheck(check);
  await rt.bus.waitConnected();
  await svc.start();
});
after(async () => {
  await conn?.close();
  await svc?.stop();
  await rt?.close();
  await redis?.close();
  await vhost?.delete();
  maildir?.cleanup();
});

/** Copies counted by result (written, duplicate, over-quota...), or all of them. */
const deliveries = async (result?: string) => {
  const metric = await rt.registry.getSingleMetric('mailyard_delivery_deliveries_total')?.get();
  return (metric?.values ?? [])
    .filter((v) => result === undefined || v.labels.result === result)
    .reduce((n, v) => n + v.value, 0);
};

/**
 * A maildir whose tmp/ even root may not create files in, as one restored with the wrong
 * owner; repairMaildir sets it right.
 */
function breakMaildir(dir: string): void {
  for (const d of ['new', 'cur']) mkdirSync(join(dir, d), { recursive: true });
  symlinkSync('/sys/kernel', join(dir, 'tmp'));
}
const repairMaildir = (dir: string) => rmSync(join(dir, 'tmp'));

/** Retries scheduled (messages of deferred recipients sent to a delay queue). */
const retries = async () => {
  const text = await rt.registry.getSingleMetricAsString('mailyard_delivery_retries_total');
  return Number(/mailyard_delivery_retries_total (\d+)/.exec(text)?.[1] ?? 0);
};

/** Waits until the message and its retries have all left the queues. */
const noRetryLeft = () =>
  waitFor(
    async () => {
      const depths = await queueDepths(vhost.name);
      return !depths.get(Queues.delivery) && !depths.get(delayQueue(RoutingKeys.delivery, 1000));
    },
    { what: 'no retry left' },
  );

const deadLetters = async () => (await ch.checkQueue(Queues.deadLetter)).messageCount;

const failures = async () => {
  const text = await rt.registry.getSingleMetricAsString('mailyard_delivery_failures_total');
  return Number(/mailyard_delivery_failures_total (\d+)/.exec(text)?.[1] ?? 0);
};

test(
  'Redis down: the message is held (not forwarded, not dead-lettered) and filed once Redis is back',
  { timeout: 60_000 },
  async () => {
    await redis.kill();
    const env = envelope(['alice@example.test']);
    await rt.bus.publishMail(RoutingKeys.delivery, Buffer.from('Subject: held\r\n\r\nbody\r\n'), env);
    // far more failed runs than delivery_max_attempts (2) would allow for other failures
    await waitFor(async () => (await failures()) >= 4, { timeoutMs: 30_000, what: 'the message held' });
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0, 'not dead-lettered');
    assert.equal((await ch.checkQueue(Queues.outbound)).messageCount, 0, 'not sent out as remote');
    const inbox = folderDir(maildir.path, 'alice@example.test', 'INBOX');
    assert.equal(maildirNew(inbox).length, 0);

    await redis.start();
    await waitFor(() => maildirNew(inbox).length === 1, {
      timeoutMs: 20_000,
      what: 'filed after Redis is back',
    });
    await waitFor(async () => (await ch.checkQueue(Queues.delivery)).messageCount === 0, { what: 'acked' });
    assert.equal(maildirNew(inbox).length, 1);
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0);
    assert.equal((await ch.checkQueue(Queues.outbound)).messageCount, 0);
  },
);

test(
  'a full mail store: the message is held, /readyz says so, filed once there is room',
  { timeout: 60_000 },
  async () => {
    const inbox = folderDir(maildir.path, 'bob@example.test', 'INBOX');
    try {
      storeFails = 'ENOSPC';
      const before = await failures();
      const env = envelope(['bob@example.test']);
      await rt.bus.publishMail(RoutingKeys.delivery, Buffer.from('Subject: disk\r\n\r\nbody\r\n'), env);
      await waitFor(async () => (await failures()) >= before + 4, {
        timeoutMs: 30_000,
        what: 'the message held',
      });
      assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0, 'not dead-lettered');
      assert.equal((await ch.checkQueue(Queues.outbound)).messageCount, 0, 'no bounce');
      const ready = await fetch(`http://127.0.0.1:${rt.httpPort}/readyz`);
      assert.equal(ready.status, 503);
      assert.match(await rt.registry.metrics(), /mailyard_bus_held_messages\{queue="delivery"\} 1/);

      storeFails = null;
      await waitFor(() => maildirNew(inbox).length === 1, { timeoutMs: 20_000, what: 'filed once fixed' });
      await waitFor(async () => (await ch.checkQueue(Queues.delivery)).messageCount === 0, { what: 'acked' });
      assert.equal((await fetch(`http://127.0.0.1:${rt.httpPort}/readyz`)).status, 200);
      assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0);
    } finally {
      storeFails = null;
    }
  },
);

/**
 * Maildirs that one account's copy cannot be filed into, each broken and repaired as an
 * operator would: one restored with the wrong owner (EACCES), one where a file holds the
 * name of new/ (EEXIST, from mkdir).
 */
const brokenMaildirs = [
  {
    what: 'one account cannot write (EACCES)',
    account: 'frank@example.test',
    breakIt: breakMaildir,
    repair: repairMaildir,
  },
  {
    what: 'whose new/ is a file (EEXIST)',
    account: 'kim@example.test',
    breakIt: (dir: string) => {
      for (const d of ['cur', 'tmp']) mkdirSync(join(dir, d), { recursive: true });
      writeFileSync(join(dir, 'new'), '');
    },
    repair: (dir: string) => rmSync(join(dir, 'new')),
  },
];

for (const broken of brokenMaildirs)
  test(
    `a maildir ${broken.what}: its recipient is retried, not dead-lettered, and filed once repaired`,
    { timeout: 60_000 },
    async () => {
      const mailbox = folderDir(maildir.path, broken.account, 'INBOX');
      const alice = folderDir(maildir.path, 'alice@example.test', 'INBOX');
      const scheduled = await retries();
      const filed = maildirNew(alice).length;
      const dead = await deadLetters();
      try {
        broken.breakIt(mailbox);
        await rt.bus.publishMail(
          RoutingKeys.delivery,
          Buffer.from(`Subject: ${broken.what}\r\n\r\nbody\r\n`),
          envelope([broken.account, 'alice@example.test']),
        );
        await waitFor(() => maildirNew(alice).length === filed + 1, {
          what: "the other account's copy filed",
        });
        // retried on the schedule (1s) past delivery_max_attempts (2), never dead-lettered
        await waitFor(async () => (await retries()) >= scheduled + 3 || (await deadLetters()) > dead, {
          timeoutMs: 20_000,
          what: 'three retries, or the message dead-lettered',
        });
        assert.equal(await deadLetters(), dead, 'not dead-lettered');
        assert.equal(maildirNew(alice).length, filed + 1, "the other account's copy filed once");
        assert.equal(
          (await fetch(`http://127.0.0.1:${rt.httpPort}/readyz`)).status,
          200,
          'the service is ready',
        );
        assert.doesNotMatch(
          await rt.registry.metrics(),
          /mailyard_bus_held_messages\{queue="delivery"\} [1-9]/,
        );
      } finally {
        broken.repair(mailbox);
      }
      // repaired: the next retry files it
      await waitFor(() => maildirMessages(mailbox).length === 1, { what: 'the copy filed once repaired' });
      await noRetryLeft();
      assert.equal(maildirMessages(mailbox).length, 1, 'one copy');
      assert.equal(maildirNew(alice).length, filed + 1, 'alice not filed again');
      assert.equal(await deadLetters(), dead, 'not dead-lettered');
    },
  );

test(
  'a maildir that two recipients lead to: both are retried, and the one still leading there gets its copy',
  { timeout: 60_000 },
  async () => {
    const gina = folderDir(maildir.path, 'gina@example.test', 'INBOX');
    const admin = new Redis(redis.port, '127.0.0.1', { keyPrefix: 'mailyard:' });
    const dir = new Directory(admin);
    await dir.addAlias('pair@example.test', ['gina@example.test', 'dan@example.test']);
    const scheduled = await retries();
    try {
      breakMaildir(gina);
      // gina's copy is filed for the alias, the first recipient that leads to her
      await rt.bus.publishMail(
        RoutingKeys.delivery,
        Buffer.from('Subject: two ways\r\n\r\nbody\r\n'),
        envelope(['pair@example.test', 'gina@example.test']),
      );
      await waitFor(async () => (await retries()) >= scheduled + 1, { what: 'a retry' });
      // the operator takes gina off the alias, then repairs her maildir: she is still
      // a recipient of her own, whose copy the retry must file
      await dir.delAlias('pair@example.test', 'gina@example.test');
    } finally {
      repairMaildir(gina);
      admin.disconnect();
    }
    await waitFor(() => maildirMessages(gina).length === 1, { timeoutMs: 20_000, what: "gina's copy filed" });
    await noRetryLeft();
    assert.equal(maildirMessages(gina).length, 1, 'one copy');
  },
);

test(
  'a copy written, whose marker was lost and which IMAP moved to cur/, is not filed again on the rerun',
  { timeout: 30_000 },
  async () => {
    const carol = new MailAccount(maildir.path, 'carol@example.test');
    const inbox = carol.folder('INBOX');
    // the file is in new/ when the marker fails; a mail client looks at INBOX meanwhile
    // (the message is numbered and moved into cur/) before the bus runs the message again
    markFails = async () => void (await inbox.snapshot());
    const before = await deliveries();
    const env = envelope(['carol@example.test']);
    await rt.bus.publishMail(RoutingKeys.delivery, Buffer.from('Subject: once\r\n\r\nbody\r\n'), env);
    await waitFor(async () => (await deliveries()) === before + 1, { what: 'the rerun counted' });
    assert.equal(markFails, null, 'the marker failed once');
    const dir = folderDir(maildir.path, 'carol@example.test', 'INBOX');
    assert.equal(maildirMessages(dir).length, 1, 'one file');
    // the user deletes it: it does not come back as a new message
    const [m] = (await inbox.snapshot()).messages;
    await inbox.store([{ uid: m!.uid, op: 'add', flags: ['\\Deleted'] }]);
    await inbox.expunge([m!.uid]);
    assert.deepEqual((await carol.folder('INBOX').snapshot()).messages, []);
    assert.deepEqual(maildirMessages(dir), []);
  },
);

test(
  'a copy filed before its marker was lost is not returned as over quota by the rerun',
  { timeout: 30_000 },
  async () => {
    await ch.purgeQueue(Queues.outbound);
    // room for this copy, not for two: the one filed counts in the usage once it is there
    await new Quotas(rt.redis, 0).set('erin@example.test', 1000);
    const body = Buffer.from(`Subject: near quota\r\n\r\n${'x'.repeat(600)}\r\n`);
    markFails = async () => undefined;
    const before = await deliveries();
    const overQuota = await deliveries('over-quota');
    await rt.bus.publishMail(RoutingKeys.delivery, body, envelope(['erin@example.test']));
    await waitFor(async () => (await deliveries()) === before + 1, { what: 'the rerun counted' });
    assert.equal(markFails, null, 'the marker failed once');
    assert.equal(await deliveries('over-quota'), overQuota, 'not over quota');
    await waitFor(async () => (await ch.checkQueue(Queues.delivery)).messageCount === 0, { what: 'acked' });
    assert.equal((await ch.checkQueue(Queues.outbound)).messageCount, 0, 'no DSN');
    assert.equal(maildirMessages(folderDir(maildir.path, 'erin@example.test', 'INBOX')).length, 1);
  },
);

test(
  'a copy being written is not marked delivered, for versions that take any such marker as done',
  { timeout: 30_000 },
  async () => {
    const env = envelope(['alice@example.test']);
    const copy = `${env.queueId}:${createHash('sha256').update('alice@example.test').digest('hex').slice(0, 16)}`;
    // the moment between the write and its marker, where a crash leaves only the first marker
    let between: [string | null, string | null] | null = null;
    markFails = async () => {
      between = [await rt.redis.get(`delivered:${copy}`), await rt.redis.get(`delivering:${copy}`)];
    };
    const before = await deliveries();
    await rt.bus.publishMail(RoutingKeys.delivery, Buffer.from('Subject: mid-write\r\n\r\nbody\r\n'), env);
    await waitFor(async () => (await deliveries()) === before + 1, { what: 'the rerun counted' });
    assert.deepEqual(between, [null, '1'], 'no delivered: marker until the copy is filed');
    assert.equal(await rt.redis.get(`delivered:${copy}`), '1');
    assert.equal(await rt.redis.exists(`delivering:${copy}`), 0, 'the in-progress marker is gone');
  },
);

test(
  'a forward published again by a rerun (its marker lost) keeps its queue id, on which outbound dedupes',
  { timeout: 30_000 },
  async () => {
    await ch.purgeQueue(Queues.outbound);
    await new MailRules(rt.redis).setForwarding('dan@example.test', {
      targets: ['dan@far.test'],
      keepCopy: false,
    });
    markFails = async () => undefined;
    const env = envelope(['dan@example.test']);
    await rt.bus.publishMail(RoutingKeys.delivery, Buffer.from('Subject: fwd\r\n\r\nbody\r\n'), env);
    await waitFor(async () => (await ch.checkQueue(Queues.outbound)).messageCount === 2, {
      what: 'the forward and the rerun’s',
    });
    const ids = [];
    for (let i = 0; i < 2; i++) {
      const m = await ch.get(Queues.outbound, { noAck: true });
      assert.ok(m);
      const fenv = JSON.parse(String(m.properties.headers?.[ENVELOPE_HEADER])) as Envelope;
      assert.deepEqual(fenv.recipients, ['dan@far.test']);
      ids.push(fenv.queueId);
    }
    assert.notEqual(ids[0], env.queueId);
    assert.equal(ids[1], ids[0]);
  },
);

test(
  "an error of the code (Node's ERR_*), not of a mailbox: dead-lettered for someone to see, not retried",
  { timeout: 60_000 },
  async () => {
    const scheduled = await retries();
    try {
      storeFails = 'ERR_INVALID_ARG_TYPE';
      await rt.bus.publishMail(
        RoutingKeys.delivery,
        Buffer.from('Subject: a bug\r\n\r\nbody\r\n'),
        envelope(['bob@example.test']),
      );
      await waitFor(async () => (await ch.checkQueue(Queues.deadLetter)).messageCount === 1, {
        timeoutMs: 30_000,
        what: 'the message dead-lettered',
      });
      assert.equal(await retries(), scheduled, 'no retry scheduled');
    } finally {
      storeFails = null;
      await ch.purgeQueue(Queues.deadLetter);
    }
  },
);

test(
  'Redis full: a message is filed at once, once, and a forward sent on once',
  { timeout: 60_000 },
  async () => {
    await ch.purgeQueue(Queues.outbound);
    await new MailRules(rt.redis).setForwarding('ivan@example.test', {
      targets: ['ivan@far.test'],
      keepCopy: false,
    });
    const holly = folderDir(maildir.path, 'holly@example.test', 'INBOX');
    const acked = () =>
      waitFor(async () => (await ch.checkQueue(Queues.delivery)).messageCount === 0, { what: 'acked' });
    await redis.whileFull(async () => {
      const env = envelope(['holly@example.test', 'ivan@example.test']);
      const body = Buffer.from('Subject: Redis full\r\n\r\nbody\r\n');
      await rt.bus.publishMail(RoutingKeys.delivery, body, env);
      await waitFor(() => maildirNew(holly).length === 1, {
        timeoutMs: 20_000,
        what: 'filed while Redis is full',
      });
      await acked();
      // the same message again, as the broker gives it after an instance died before its ack
      const duplicates = await deliveries('duplicate');
      await rt.bus.publishMail(RoutingKeys.delivery, body, env);
      await waitFor(async () => (await deliveries('duplicate')) > duplicates, { what: 'the rerun skipped' });
      await acked();
    });
    assert.equal(maildirMessages(holly).length, 1, 'one copy');
    assert.equal((await ch.checkQueue(Queues.outbound)).messageCount, 1, 'one forward');
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0);
  },
);

test(
  'a maildir restored without its new/ while delivery runs: the next copy is filed, not dead-lettered',
  { timeout: 60_000 },
  async () => {
    const judy = folderDir(maildir.path, 'judy@example.test', 'INBOX');
    const failed = await failures();
    const dead = await deadLetters();
    const send = (subject: string) =>
      rt.bus.publishMail(
        RoutingKeys.delivery,
        Buffer.from(`Subject: ${subject}\r\n\r\nbody\r\n`),
        envelope(['judy@example.test']),
      );
    await send('before the restore');
    await waitFor(() => maildirNew(judy).length === 1, { what: 'the first copy filed' });
    // restored from a backup that keeps no empty directory: the mail read is in cur/, a
    // file an interrupted write left keeps tmp/, the empty new/ is gone
    for (const path of maildirNew(judy)) renameSync(path, path.replace('/new/', '/cur/') + ':2,S');
    writeFileSync(join(judy, 'tmp', 'left-by-a-crash'), 'x');
    rmSync(join(judy, 'new'), { recursive: true });
    await send('after the restore');
    await waitFor(async () => maildirNew(judy).length === 1 || (await deadLetters()) > dead, {
      timeoutMs: 20_000,
      what: 'the second copy filed or dead-lettered',
    });
    assert.equal(await deadLetters(), dead, 'not dead-lettered');
    assert.equal(maildirMessages(judy).length, 2, 'both copies in the mailbox');
    assert.equal(await failures(), failed, 'no run failed');
  },
);
