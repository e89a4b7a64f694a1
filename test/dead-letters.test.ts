// `mailyard queue dead list|show|requeue|delete`: the dead-letter queue as an operator
// handles it, through the real CLI against a real broker and Redis. A message really
// dead-lettered by delivery (its alias's external members refused by a full `outbound`)
// is requeued once `outbound` takes mail again and reaches the recipients it had not
// reached, nobody twice; letters
// published to `mail.dlx` with the bus's headers cover the other origins (outbound, an
// event, a queue requeue cannot send to, RabbitMQ's own dead-lettering); and a
// `dead-letter` queue with a delivery limit, as RabbitMQ 4.0 to 4.2 give every quorum
// queue, does not lose a letter however often it is listed.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, type ChannelModel, type ConfirmChannel } from 'amqplib';
import { Bus } from '@mailyard/bus';
import { createRedisClient } from '@mailyard/cli';
import {
  DEAD_LETTER_EXCHANGE,
  ENVELOPE_HEADER,
  EVENTS_EXCHANGE,
  Headers,
  Queues,
  RoutingKeys,
  type Envelope,
} from '@mailyard/contracts';
import { createLogger } from '@mailyard/observability';
import { newQueueId } from '@mailyard/smtp-core';
import {
  createTestRedis,
  createVhost,
  queueDepth,
  refuseAfterOne,
  waitFor,
  type TestRedis,
  type TestVhost,
} from '@mailyard/testkit';
import { addCrowd, crowdRemote, team, teamRemote } from '../services/delivery/test/crowd.js';
import { envelope } from '../services/delivery/test/envelope.js';
import { startPlatform, type Platform } from './harness.js';
import { mailyardIn } from './mailyard-cli.js';

type CliEnv = { AMQP_URL: string; REDIS_PREFIX: string };

/** Runs `mailyard ...` in-process, as the operator would, against a vhost and key prefix. */
const mailyard = (env: CliEnv, ...argv: string[]) => mailyardIn(env, argv);

/** Publishes a letter to `mail.dlx` as the bus dead-letters one (confirmed). */
async function deadLetter(ch: ConfirmChannel, body: Buffer, headers: Record<string, unknown>): Promise<void> {
  ch.publish(DEAD_LETTER_EXCHANGE, '', body, { persistent: true, headers });
  await ch.waitForConfirms();
}

const busHeaders = (queue: string, reason: string, attempts = 1) => ({
  [Headers.deadLetterReason]: reason,
  [Headers.deadLetterQueue]: queue,
  [Headers.deadLetterAttempts]: attempts,
  [Headers.deadLetterTime]: new Date().toISOString(),
});

const jsonLines = (out: string) =>
  out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('dead letters of a running platform', () => {
  const body = Buffer.from(
    'From: sender@remote.test\r\nTo: crowd@example.test\r\nSubject: all of us\r\n\r\nHello\r\n',
  );

  let p: Platform;
  let env: { AMQP_URL: string; REDIS_PREFIX: string };
  let conn: ChannelModel;
  let ch: ConfirmChannel;
  before(async () => {
    p = await startPlatform();
    env = { AMQP_URL: p.vhost.url, REDIS_PREFIX: p.redis.prefix };
    await addCrowd(p.directory);
    conn = await connect(p.vhost.url);
    ch = await conn.createConfirmChannel();
  });
  after(async () => {
    await conn?.close();
    await p?.close();
  });

  /** The recipients of each message in `outbound` now, taking them. */
  async function takeOutbound(): Promise<string[][]> {
    const out: string[][] = [];
    for (let m; (m = await ch.get(Queues.outbound, { noAck: true }));)
      out.push((JSON.parse(String(m.properties.headers?.[ENVELOPE_HEADER])) as Envelope).recipients);
    return out;
  }

  const depth = async (queue: string) => (await ch.checkQueue(queue)).messageCount;

  const oneCopyEach = () => {
    for (const a of ['dora@example.test', ...team]) assert.equal(p.inbox(a).length, 1, a);
  };

  test(
    'a delivery dead-lettered for a full outbound queue is listed, shown, and once outbound takes mail requeued and delivered once',
    { timeout: 120_000 },
    async () => {
      const qid = newQueueId();
      // outbound holds one message and refuses the next (a length limit, as an operator may set)
      await p.inboundRt.bus.publishMail(RoutingKeys.outbound, body, envelope(['filler@far-away.test']));
      const lift = await refuseAfterOne(p.vhost.name, Queues.outbound);
      try {
        await p.inboundRt.bus.publishMail(
          RoutingKeys.delivery,
          body,
          envelope(['crowd@example.test', 'dora@example.test'], qid),
        );
        await waitFor(async () => (await depth(Queues.deadLetter)) === 1, {
          timeoutMs: 60_000,
          what: 'the message dead-lettered after its runs',
        });
      } finally {
        await lift();
      }
      // the alias's accounts got theirs, its external members nothing
      oneCopyEach();
      assert.deepEqual(await takeOutbound(), [['filler@far-away.test']]);

      const list = await mailyard(env, 'queue', 'dead', 'list');
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, new RegExp(`^${qid}  from <sender@remote\\.test>$`, 'm'));
      assert.match(
        list.stdout,
        new RegExp(
          `^ {4}delivery, 5 attempts, dead-lettered \\S+Z \\(\\d+s ago\\), ${body.length} bytes$`,
          'm',
        ),
      );
      assert.match(list.stdout, /\(BusUnavailableError: RabbitMQ refused the message: .*\)/);
      assert.match(list.stdout, /^ {4}crowd@example\.test\n {4}dora@example\.test$/m);
      assert.match(list.stdout, /-- 1 dead letter$/m);

      const [json, ...none] = jsonLines((await mailyard(env, 'queue', 'dead', 'list', '--json')).stdout);
      assert.equal(none.length, 0);
      assert.equal(json!.queueId, qid);
      assert.equal(json!.originalQueue, 'delivery');
      assert.equal(json!.requeueable, true);
      assert.equal(json!.attempts, 5);
      assert.equal(json!.mailFrom, 'sender@remote.test');
      assert.deepEqual(json!.recipients, ['crowd@example.test', 'dora@example.test']);
      assert.equal(json!.size, body.length);
      assert.ok(Date.now() - Date.parse(String(json!.deadLetteredAt)) < 120_000);

      const show = await mailyard(env, 'queue', 'dead', 'show', qid);
      assert.equal(show.code, 0, show.stderr);
      assert.match(show.stdout, /RabbitMQ refused the message/);
      assert.match(
        show.stdout,
        /\n\nFrom: sender@remote\.test\r\nTo: crowd@example\.test\r\nSubject: all of us\n$/,
      );

      const unknown = await mailyard(env, 'queue', 'dead', 'show', 'NoSuchQueueId123');
      assert.deepEqual(unknown, {
        code: 1,
        stdout: '',
        stderr: 'mailyard: no dead letter with queue id NoSuchQueueId123\n',
      });
      await waitFor(async () => (await depth(Queues.deadLetter)) === 1, {
        what: 'list and show leave it in place',
      });

      // outbound takes mail again (delivery restarted: RabbitMQ goes on refusing a
      // channel a quorum queue refused for a while after the limit is lifted); the
      // operator requeues
      await p.stopDelivery();
      await p.startDelivery();
      const requeue = await mailyard(env, 'queue', 'dead', 'requeue', qid);
      assert.deepEqual(requeue, { code: 0, stdout: '1 dead letter requeued\n', stderr: '' });
      const outbound: string[] = [];
      await waitFor(
        async () => {
          outbound.push(...(await takeOutbound()).flat());
          return outbound.length >= 5;
        },
        { timeoutMs: 30_000, what: "the alias's members reached" },
      );
      await waitFor(async () => (await queueDepth(p.vhost.name, Queues.delivery)) === 0, {
        what: 'the requeued message done with',
      });
      assert.deepEqual(outbound.sort(), [...crowdRemote, ...teamRemote], 'each external member once');
      oneCopyEach();
      assert.equal(await depth(Queues.deadLetter), 0, 'not dead-lettered again');
      assert.deepEqual(await takeOutbound(), []);
      assert.match((await mailyard(env, 'queue', 'dead', 'list')).stdout, /^Dead-letter queue is empty\n$/);
      assert.match(
        (await mailyard(env, 'audit')).stdout,
        new RegExp(`\\tqueue\\.dead\\.requeue\\t${qid}\\tmessages=1 queueIds=${qid}\\n`),
      );
    },
  );

  test(
    'letters of outbound, an event, RabbitMQ and unknown queues: requeued where they came from, or kept and deleted',
    { timeout: 120_000 },
    async () => {
      // delivery would take anything sent back to it: these go to outbound, which nothing consumes here
      await p.stopDelivery();
      const qid = newQueueId();
      const mail = Buffer.from('Subject: parts\r\n\r\nbody\r\n');
      const partA = envelope(['a@far-away.test'], qid);
      const partB = envelope(['b@far-away.test'], qid);
      for (const part of [partA, partB])
        await deadLetter(ch, mail, {
          [ENVELOPE_HEADER]: JSON.stringify(part),
          [Headers.envelopeVersion]: 1,
          'x-delivery-count': 9,
          ...busHeaders(Queues.outbound, 'BusUnavailableError: publish channel closed', 10),
        });
      const policy = Buffer.from('a policy request nobody waits for any more');
      await deadLetter(ch, policy, busHeaders(Queues.policy, 'PoisonMessageError: redelivered 2 times'));
      const event = {
        v: 1,
        account: 'dora@example.test',
        folder: 'INBOX',
        queueId: null,
        at: new Date().toISOString(),
      };
      await deadLetter(
        ch,
        Buffer.from(JSON.stringify(event)),
        busHeaders('events/mailbox.changed', 'ContractError: invalid mailbox.changed event'),
      );
      // as RabbitMQ dead-letters a message over the queue's delivery limit itself
      const limited = newQueueId();
      await deadLetter(ch, mail, {
        [ENVELOPE_HEADER]: JSON.stringify(envelope(['c@far-away.test'], limited)),
        'x-first-death-queue': Queues.outbound,
        'x-first-death-reason': 'delivery_limit',
        'x-first-death-exchange': 'mail',
        'x-death': [
          {
            queue: Queues.outbound,
            reason: 'delivery_limit',
            count: 1,
            exchange: 'mail',
            time: { '!': 'timestamp', value: Math.floor(Date.parse('2030-01-02T03:04:05Z') / 1000) },
          },
        ],
      });
      await deadLetter(ch, Buffer.from('nothing says where this came from'), {});

      const list = await mailyard(env, 'queue', 'dead', 'list');
      assert.equal(list.code, 0, list.stderr);
      const block = new RegExp(
        `^${qid}  from <sender@remote\\.test>\\n( {4}outbound, 10 attempts, dead-lettered .*\\n {4}\\(BusUnavailableError: publish channel closed\\)\\n {4}[ab]@far-away\\.test\\n){2}`,
        'm',
      );
      assert.match(list.stdout, block, 'the two letters of a queue id in one block');
      assert.match(
        list.stdout,
        new RegExp(
          `^${limited}  from <sender@remote\\.test>\\n {4}outbound, attempts unknown, dead-lettered 2030-01-02T03:04:05\\.000Z \\(.*\\), 24 bytes\\n {4}\\(RabbitMQ: delivery_limit\\)$`,
          'm',
        ),
      );
      assert.match(
        list.stdout,
        /^dl-[0-9a-f]{12} {2}\(no envelope\)\n {4}policy, 1 attempt, .*\n {4}\(PoisonMessageError: redelivered 2 times\)\n {4}requeue cannot send it back: delete it once done with$/m,
      );
      assert.match(
        list.stdout,
        /^dl-[0-9a-f]{12} {2}\(no envelope\)\n {4}events\/mailbox\.changed, 1 attempt,/m,
      );
      assert.match(
        list.stdout,
        /^dl-[0-9a-f]{12} {2}\(no envelope\)\n {4}queue unknown, attempts unknown, dead-lettered at a time not recorded, 33 bytes\n {4}\(no reason recorded\)\n {4}requeue cannot send it back/m,
      );
      assert.match(list.stdout, /^-- 6 dead letters \(5 queue ids\)$/m);
      const letters = jsonLines((await mailyard(env, 'queue', 'dead', 'list', '--json')).stdout);
      const idOf = (queue: string) => String(letters.find((l) => l.originalQueue === queue)!.queueId);
      const eventId = idOf('events/mailbox.changed');
      const policyId = idOf('policy');
      assert.match((await mailyard(env, 'queue', 'dead', 'show', eventId)).stdout, /\n\n\{"v":1,"account"/);

      // both parts of the queue id go back to outbound, as new messages: no record of
      // their dead-lettering, no delivery count, the envelope as it was
      assert.deepEqual(await mailyard(env, 'queue', 'dead', 'requeue', qid), {
        code: 0,
        stdout: '2 dead letters requeued\n',
        stderr: '',
      });
      const back = await waitFor(
        async () => {
          const got = [];
          for (let m; (m = await ch.get(Queues.outbound, { noAck: true }));) got.push(m);
          return got.length ? got : null;
        },
        { what: 'the requeued parts in outbound' },
      );
      assert.equal(back.length, 2);
      for (const m of back) {
        const { 'x-delivery-count': count = 0, ...h } = m.properties.headers ?? {};
        assert.equal(count, 0, 'run afresh');
        assert.deepEqual(
          Object.keys(h).sort(),
          [ENVELOPE_HEADER, Headers.envelopeVersion].sort(),
          'only the message headers',
        );
        assert.equal(m.content.toString(), mail.toString());
      }
      assert.deepEqual(
        back
          .map((m) => JSON.parse(String(m.properties.headers?.[ENVELOPE_HEADER])) as Envelope)
          .sort((a, b) => a.recipients[0]!.localeCompare(b.recipients[0]!)),
        [partA, partB],
      );

      // nothing takes the event now: it stays, as does the letter of a queue requeue cannot send to
      const stays = await mailyard(env, 'queue', 'dead', 'requeue', eventId);
      assert.deepEqual(stays, {
        code: 1,
        stdout: '',
        stderr: `mailyard: 1 dead letter stayed in the queue: ${eventId} (nothing consumes events/mailbox.changed now)\n`,
      });
      const policyStays = await mailyard(env, 'queue', 'dead', 'requeue', policyId);
      assert.equal(policyStays.code, 1);
      assert.equal(
        policyStays.stderr,
        `mailyard: 1 dead letter stayed in the queue: ${policyId} (it came from policy, which requeue cannot send to)\n`,
      );

      // with a subscriber, the event reaches it
      const bus = new Bus({ url: p.vhost.url, logger: createLogger('test', 'silent'), name: 'subscriber' });
      bus.start();
      try {
        await bus.waitConnected();
        const seen: unknown[] = [];
        await bus.subscribe('mailbox.changed', (payload) => void seen.push(payload));
        const all = await mailyard(env, 'queue', 'dead', 'requeue', '--all');
        assert.equal(all.code, 1, 'some stayed');
        assert.equal(all.stdout, '2 dead letters requeued\n', 'the event and the delivery-limited one');
        assert.match(
          all.stderr,
          /^mailyard: 2 dead letters stayed in the queue: dl-\w+ \(.*\), dl-\w+ \(.*\)\n$/,
        );
        await waitFor(() => seen.length === 1, { what: 'the event delivered to its subscriber' });
        assert.deepEqual(seen, [event]);
      } finally {
        await bus.stop();
      }
      // the one RabbitMQ dead-lettered went back to outbound without RabbitMQ's record of it
      const renewed = await waitFor(async () => ch.get(Queues.outbound, { noAck: true }), {
        what: 'the delivery-limited letter in outbound',
      });
      assert.equal(
        (JSON.parse(String(renewed.properties.headers?.[ENVELOPE_HEADER])) as Envelope).queueId,
        limited,
      );
      assert.deepEqual(
        Object.keys(renewed.properties.headers ?? {}).filter((h) => h !== 'x-delivery-count'),
        [ENVELOPE_HEADER],
      );

      assert.equal(jsonLines((await mailyard(env, 'queue', 'dead', 'list', '--json')).stdout).length, 2);
      assert.deepEqual(await mailyard(env, 'queue', 'dead', 'delete', policyId), {
        code: 0,
        stdout: `deleted ${policyId}\n`,
        stderr: '',
      });
      assert.deepEqual(await mailyard(env, 'queue', 'dead', 'delete', '--all'), {
        code: 0,
        stdout: 'deleted 1 dead letter\n',
        stderr: '',
      });
      await waitFor(async () => (await depth(Queues.deadLetter)) === 0, { what: 'the deleted letters gone' });
      assert.deepEqual(await mailyard(env, 'queue', 'dead', 'delete', policyId), {
        code: 1,
        stdout: '',
        stderr: `mailyard: no dead letter with queue id ${policyId}\n`,
      });
      const audit = (await mailyard(env, 'audit')).stdout;
      assert.match(
        audit,
        new RegExp(`\\tqueue\\.dead\\.delete\\t${policyId}\\tmessages=1 queueIds=${policyId}\\n`),
      );
      assert.match(audit, /\tqueue\.dead\.delete\t\*\tmessages=1 queueIds=dl-\w+\n/);
      assert.match(audit, new RegExp(`\\tqueue\\.dead\\.requeue\\t${qid}\\tmessages=2 queueIds=${qid}\\n`));

      for (const [argv, message] of [
        [['requeue'], 'name a queue id or use --all'],
        [['delete', qid, '--all'], 'use either a queue id or --all, not both'],
      ] as const)
        assert.deepEqual(await mailyard(env, 'queue', 'dead', ...argv), {
          code: 1,
          stdout: '',
          stderr: `mailyard: ${message}\n`,
        });
    },
  );
});

describe('an event every subscriber dead-lettered', () => {
  let vhost: TestVhost;
  let redis: TestRedis;
  let conn: ChannelModel;
  let ch: ConfirmChannel;
  const buses: Bus[] = [];
  const startBus = async (name: string) => {
    const bus = new Bus({ url: vhost.url, logger: createLogger('test', 'silent'), name });
    buses.push(bus);
    bus.start();
    await bus.waitConnected();
    return bus;
  };
  before(async () => {
    vhost = await createVhost();
    redis = createTestRedis();
    await startBus('topology');
    conn = await connect(vhost.url);
    ch = await conn.createConfirmChannel();
  });
  after(async () => {
    for (const bus of buses) await bus.stop();
    await conn?.close();
    await redis?.cleanup();
    await vhost?.delete();
  });

  test('is requeued once: each subscriber gets it once, not once per copy', { timeout: 60_000 }, async () => {
    const env = { AMQP_URL: vhost.url, REDIS_PREFIX: redis.prefix };
    // each of two instances read the event from its own queue and dead-lettered its copy
    const event = {
      v: 1,
      account: 'dora@example.test',
      folder: 'Junk',
      queueId: null,
      at: new Date().toISOString(),
    };
    for (let i = 0; i < 2; i++)
      await deadLetter(
        ch,
        Buffer.from(JSON.stringify(event)),
        busHeaders('events/mailbox.changed', 'ContractError: invalid mailbox.changed event'),
      );
    const letters = jsonLines((await mailyard(env, 'queue', 'dead', 'list', '--json')).stdout);
    assert.equal(letters.length, 2);
    assert.equal(letters[0]!.queueId, letters[1]!.queueId, 'one id for the copies of one event');

    const seen: { folder: string }[][] = [[], []];
    for (const [i, got] of seen.entries())
      await (
        await startBus(`subscriber-${i}`)
      ).subscribe('mailbox.changed', (payload) => void got.push(payload));
    const all = await mailyard(env, 'queue', 'dead', 'requeue', '--all');
    assert.deepEqual(all, { code: 0, stdout: '2 dead letters requeued\n', stderr: '' });
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0, 'both copies done with');

    // an event published after the requeue reaches each subscriber after whatever it sent
    const marker = { ...event, folder: 'INBOX' };
    ch.publish(EVENTS_EXCHANGE, 'mailbox.changed', Buffer.from(JSON.stringify(marker)));
    await ch.waitForConfirms();
    await waitFor(() => seen.every((got) => got.length && got.at(-1)!.folder === 'INBOX'), {
      what: 'the later event at both subscribers',
    });
    for (const got of seen) assert.deepEqual(got, [event, marker]);
  });
});

describe('a dead-letter queue with a delivery limit (RabbitMQ 4.0 to 4.2 give every quorum queue one of 20)', () => {
  let vhost: TestVhost;
  let redis: TestRedis;
  let conn: ChannelModel;
  let ch: ConfirmChannel;
  before(async () => {
    vhost = await createVhost();
    redis = createTestRedis();
    conn = await connect(vhost.url);
    ch = await conn.createConfirmChannel();
    await ch.assertExchange(DEAD_LETTER_EXCHANGE, 'fanout', { durable: true });
    // as 4.x declares the topology's `dead-letter`: a limit, and no dead-letter exchange to
    // send a message over it to, so it would be dropped
    await ch.assertQueue(Queues.deadLetter, {
      durable: true,
      arguments: { 'x-queue-type': 'quorum', 'x-delivery-limit': 20 },
    });
    await ch.bindQueue(Queues.deadLetter, DEAD_LETTER_EXCHANGE, '');
  });
  after(async () => {
    await conn?.close();
    await redis?.cleanup();
    await vhost?.delete();
  });

  test('listing it more often than the limit loses no letter', { timeout: 180_000 }, async () => {
    const env = { AMQP_URL: vhost.url, REDIS_PREFIX: redis.prefix };
    const qid = newQueueId();
    const at = new Date(Date.now() - 3_600_000).toISOString();
    await deadLetter(ch, Buffer.from('Subject: kept\r\n\r\n'), {
      [ENVELOPE_HEADER]: JSON.stringify(envelope(['x@example.test'], qid)),
      ...busHeaders(Queues.delivery, 'Error: EACCES'),
      [Headers.deadLetterTime]: at,
    });
    for (let i = 0; i < 30; i++) {
      // two at once, as two operators might: each waits for the other, and sees it all
      const runs = await Promise.all([
        mailyard(env, 'queue', 'dead', 'list', '--json'),
        ...(i % 10 === 0 ? [mailyard(env, 'queue', 'dead', 'list', '--json')] : []),
      ]);
      for (const r of runs) {
        assert.equal(r.code, 0, r.stderr);
        const letters = jsonLines(r.stdout);
        assert.equal(letters.length, 1, `listing ${i + 1}: ${r.stdout}`);
        assert.equal(letters[0]!.queueId, qid);
        assert.equal(letters[0]!.deadLetteredAt, at, 'the time it was dead-lettered stays');
      }
    }
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 1);
  });

  test(
    'a reader whose lease Redis did not renew answers "try again", not "none"',
    { timeout: 60_000 },
    async () => {
      const env = { AMQP_URL: vhost.url, REDIS_PREFIX: redis.prefix };
      const [letter] = jsonLines((await mailyard(env, 'queue', 'dead', 'list', '--json')).stdout);
      const qid = String(letter!.queueId);
      // the lease is taken, then every renewal fails: another reader may have taken over
      const failingRenewals: typeof createRedisClient = async (config) => {
        const client = await createRedisClient(config);
        const evaluate = client.eval.bind(client) as (...args: unknown[]) => Promise<unknown>;
        client.eval = (script: string, ...args: unknown[]) =>
          script.includes('PEXPIRE')
            ? Promise.reject(new Error('READONLY You cannot write against a read only replica.'))
            : evaluate(script, ...args);
        return client;
      };
      const tryAgain = {
        code: 1,
        stdout: '',
        stderr:
          'mailyard: the dead-letter queue could not be read alone (the read lock in Redis was lost); try again\n',
      };
      for (const argv of [
        ['list'],
        ['show', qid],
        ['delete', 'dl-000000000000'],
        ['requeue', 'dl-000000000000'],
      ])
        assert.deepEqual(
          await mailyardIn(env, ['queue', 'dead', ...argv], failingRenewals),
          tryAgain,
          argv.join(' '),
        );
      // the letter is still there, and a reader whose lease holds sees it
      assert.equal(jsonLines((await mailyard(env, 'queue', 'dead', 'list', '--json')).stdout).length, 1);
      assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 1);
    },
  );
});
