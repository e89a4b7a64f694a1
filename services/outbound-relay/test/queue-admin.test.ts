import assert from 'node:assert/strict';
import { after, before, test, type TestContext } from 'node:test';
import { Command } from 'commander';
import { MAIL_EXCHANGE, MailMessages, RoutingKeys, type Envelope } from '@mailyard/contracts';
import { registerQueueCommands } from '@mailyard/queue-admin/cli';
import { DEFERRED_INDEX_KEY, DeferredIndex, retryDeferred, type DeferredEntry } from '@mailyard/queue-admin';
import { withScanLease } from '@mailyard/queue-admin/scan-lease';
import { removeEmptyQueues } from '../src/legacy-queues.js';
import { queueDepth, waitFor } from '@mailyard/testkit';
import { startPlatform, type Platform } from '../../../test/harness.js';
import {
  entryOf,
  envelope,
  freePort,
  queueOutbound,
  relayTestbed,
  simpleMessage,
  startRelay,
  startRemoteMta,
  type RelayHandle,
  type RelayTestbed,
  type RemoteMta,
} from './helpers.js';

// `mailyard queue list|show|retry|delete` against messages really deferred by a relay
// whose schedule is one hour: only the queue commands can bring them back early.
let bed: RelayTestbed;
let p: Platform;
let relay: RelayHandle;
let mx: RemoteMta;
let accept = false;

before(async () => {
  bed = await relayTestbed({
    withDelivery: false,
    zone: {
      'later.test': { MX: [{ priority: 10, exchange: 'mx.later.test' }] },
      'mx.later.test': { A: ['127.0.0.11'] },
    },
  });
  p = bed.p;
  mx = await bed.remote('127.0.0.11', {
    rcpt: () => (accept ? undefined : { code: 452, message: '4.2.2 Mailbox full' }),
  });
  relay = await bed.relay({ outbound_retry_schedule: '1h', delay_warning_time: 0 });
});

after(() => bed?.close());

/** Runs `mailyard queue ...` in-process; returns stdout and the error, if any. */
async function queueCmd(...args: string[]): Promise<{ out: string; err: Error | null }> {
  return queueCmdOn(p, '1h', ...args);
}

/** `mailyard queue ...` on `on`, told the relays' schedule, or (null) not. */
async function queueCmdOn(
  on: Platform,
  schedule: string | null,
  ...args: string[]
): Promise<{ out: string; err: Error | null }> {
  let out = '';
  const program = new Command('mailyard').exitOverride();
  registerQueueCommands(program, {
    env: { AMQP_URL: on.env.AMQP_URL, ...(schedule === null ? {} : { OUTBOUND_RETRY_SCHEDULE: schedule }) },
    print: (line) => (out += line + '\n'),
    withRedis: (fn) => fn(on.redis.redis),
    fail: (m) => new Error(m),
  });
  try {
    await program.parseAsync(['queue', ...args], { from: 'user' });
    return { out, err: null };
  } catch (err) {
    return { out, err: err as Error };
  }
}

/** A platform of the test's own (no delivery) where `domain`'s one MX is at `ip`. */
async function platformWithMx(t: TestContext, domain: string, ip: string): Promise<Platform> {
  const q = await startPlatform({
    withDelivery: false,
    zone: {
      [domain]: { MX: [{ priority: 10, exchange: `mx.${domain}` }] },
      [`mx.${domain}`]: { A: [ip] },
    },
  });
  t.after(() => q.close());
  return q;
}

test('list, show, delete and retry deferred messages', async () => {
  const one = envelope('ann@example.test', ['full@later.test']);
  const two = envelope('ben@example.test', ['full@later.test']);
  await queueOutbound(p, one, simpleMessage('ann@example.test', 'full@later.test', 'deferred-one'));
  await queueOutbound(p, two, simpleMessage('ben@example.test', 'full@later.test', 'deferred-two'));
  await waitFor(async () => (await queueDepth(p.vhost.name, 'outbound.retry.1h')) === 2, {
    what: 'two deferred',
  });

  const list = await queueCmd('list');
  assert.equal(list.err, null);
  assert.match(list.out, new RegExp(`${one.queueId} .* from <ann@example\\.test>`));
  assert.match(list.out, new RegExp(`${two.queueId} .* from <ben@example\\.test>`));
  assert.match(list.out, /attempts 1, next try .* \(in (59|60)m\)/);
  assert.match(list.out, /452 4\.2\.2 Mailbox full/);
  assert.match(list.out, /-- 2 deferred messages/);

  const show = await queueCmd('show', one.queueId);
  assert.equal(show.err, null);
  assert.match(show.out, /Subject: deferred-one/);
  assert.equal(await queueDepth(p.vhost.name, 'outbound.retry.1h'), 2, 'show leaves the message in place');

  const del = await queueCmd('delete', two.queueId);
  assert.equal(del.err, null);
  // the broker applies the acknowledgement after the command's channel has closed
  await waitFor(async () => (await queueDepth(p.vhost.name, 'outbound.retry.1h')) === 1, {
    what: 'the deleted message gone from its queue',
  });
  assert.doesNotMatch((await queueCmd('list')).out, new RegExp(two.queueId));

  accept = true;
  const retry = await queueCmd('retry', one.queueId);
  assert.equal(retry.err, null);
  assert.match(retry.out, /1 message queued for delivery/);
  await waitFor(() => mx.received.some((m) => m.data.toString().includes('Subject: deferred-one')), {
    what: 'delivery after retry',
  });
  assert.ok(
    !mx.received.some((m) => m.data.toString().includes('Subject: deferred-two')),
    'deleted stays deleted',
  );
  assert.match((await queueCmd('list')).out, /Mail queue is empty/);
});

test('unknown ids and bad usage are one clear error', async () => {
  assert.match(
    (await queueCmd('show', 'NoSuchId1234')).err?.message ?? '',
    /no deferred message with queue id/,
  );
  assert.match(
    (await queueCmd('delete', 'NoSuchId1234')).err?.message ?? '',
    /no deferred message with queue id/,
  );
  assert.match((await queueCmd('retry')).err?.message ?? '', /name a queue id or use --all/);
  const all = await queueCmd('retry', '--all');
  assert.equal(all.err, null);
  assert.match(all.out, /0 messages queued/);
});

test('list shows only what show, delete and retry find: a stale index entry is not listed', async () => {
  // as a relay that died between taking the message back and clearing its entry leaves it
  const index = new DeferredIndex(p.redis.redis);
  await index.add({
    queueId: 'GoneAway12345678',
    mailFrom: 'gone@example.test',
    recipients: ['full@later.test'],
    attempts: 2,
    lastError: '452 4.2.2 Mailbox full',
    receivedAt: new Date().toISOString(),
    nextTry: new Date().toISOString(),
    queue: 'outbound.retry.1h',
    size: 100,
  });
  const list = await queueCmd('list');
  assert.equal(list.err, null);
  assert.doesNotMatch(list.out, /GoneAway12345678/);
  assert.match((await queueCmd('show', 'GoneAway12345678')).err?.message ?? '', /no deferred message/);
  assert.equal(await entryOf(index, 'GoneAway12345678'), null, 'the stale entry is dropped from the index');

  // one whose next try is still ahead may be a message on its way back from a reader
  await index.add({
    queueId: 'NotDueYet1234567',
    mailFrom: 'later@example.test',
    recipients: ['full@later.test'],
    attempts: 1,
    lastError: '452 4.2.2 Mailbox full',
    receivedAt: new Date().toISOString(),
    nextTry: new Date(Date.now() + 3_600_000).toISOString(),
    queue: 'outbound.retry.1h',
    size: 100,
  });
  assert.doesNotMatch((await queueCmd('list')).out, /NotDueYet1234567/);
  assert.notEqual(await entryOf(index, 'NotDueYet1234567'), null, 'kept until its next try has passed');
  await index.remove('NotDueYet1234567', ['full@later.test']);
});

test(
  'two lists at once, or a delete during a list, see every deferred message',
  { timeout: 120_000 },
  async () => {
    accept = false;
    const index = new DeferredIndex(p.redis.redis);
    const envs = Array.from({ length: 30 }, (_, i) => envelope(`s${i}@example.test`, ['full@later.test']));
    for (const [i, env] of envs.entries())
      await queueOutbound(p, env, simpleMessage(env.mailFrom, 'full@later.test', `many-${i}`));
    await waitFor(async () => (await queueDepth(p.vhost.name, 'outbound.retry.1h')) === 30, {
      what: 'thirty deferred',
      timeoutMs: 60_000,
    });
    await waitFor(async () => (await index.list()).length === 30, { what: 'thirty index entries' });

    const lists = await Promise.all([queueCmd('list'), queueCmd('list')]);
    for (const l of lists) {
      assert.equal(l.err, null);
      assert.match(l.out, /-- 30 deferred messages/);
    }
    assert.equal((await index.list()).length, 30, 'no entry dropped from the index');

    const [list, del] = await Promise.all([queueCmd('list'), queueCmd('delete', envs[0]!.queueId)]);
    assert.equal(del.err, null, 'the delete found its message');
    assert.equal(list.err, null);
    assert.match((await queueCmd('list')).out, /-- 29 deferred messages/);

    accept = true;
    assert.match((await queueCmd('retry', '--all')).out, /29 messages queued/);
    await waitFor(async () => (await queueDepth(p.vhost.name, 'outbound.retry.1h')) === 0, {
      what: 'the delay queue emptied',
    });
  },
);

test(
  'a retried message goes once even when Redis refuses to clear its entry',
  { timeout: 60_000 },
  async () => {
    accept = false;
    const env = envelope('once@example.test', ['full@later.test']);
    await queueOutbound(p, env, simpleMessage(env.mailFrom, 'full@later.test', 'retried-once'));
    const index = new DeferredIndex(p.redis.redis);
    await waitFor(() => entryOf(index, env.queueId), { what: 'deferred' });
    accept = true;
    // as a Redis that turned read-only (a failover) answers the HDEL
    const redis = p.redis.redis;
    const refusing = new Proxy(redis, {
      get: (target, prop) =>
        prop === 'hdel'
          ? () => Promise.reject(new Error("READONLY You can't write against a read only replica."))
          : (Reflect.get(target, prop, target) as unknown),
    });
    assert.equal(await retryDeferred({ bus: relay.rt.bus, redis: refusing }, { queueId: env.queueId }), 1);
    await waitFor(() => mx.received.some((m) => m.data.toString().includes('Subject: retried-once')), {
      what: 'delivery after retry',
    });
    // the original is not kept for later (the broker applies the ack after the close)
    await waitFor(async () => (await queueDepth(p.vhost.name, 'outbound.retry.1h')) === 0, {
      what: 'the original gone from the delay queue',
    });
    assert.doesNotMatch(
      (await queueCmd('list')).out,
      new RegExp(env.queueId),
      'the entry left behind is dropped',
    );
  },
);

test(
  'a message deferred only because its destination was busy leaves the list once delivered',
  { timeout: 120_000 },
  async (t) => {
    const port = await freePort();
    const q = await platformWithMx(t, 'busy.test', '127.0.0.14');
    // one message at a time, each slow: the second finds the destination busy (4.4.5)
    let hold: (() => void) | null = null;
    const busy = await startRemoteMta('127.0.0.14', port, {
      data: () => new Promise<undefined>((r) => (hold = () => r(undefined))),
    });
    t.after(() => busy.close());
    const own = await startRelay(q, {
      outbound_port: port,
      outbound_retry_schedule: '200ms',
      default_destination_concurrency_limit: 1,
      destination_slot_wait: '100ms',
      smtp_connection_cache_time_limit: '0s',
    });
    t.after(() => own.stop());
    const first = envelope('a@example.test', ['x@busy.test']);
    const second = envelope('b@example.test', ['x@busy.test']);
    await queueOutbound(q, first, simpleMessage('a@example.test', 'x@busy.test', 'busy-one'));
    await waitFor(() => hold, { what: 'the first message in DATA' });
    await queueOutbound(q, second, simpleMessage('b@example.test', 'x@busy.test', 'busy-two'));
    const index = new DeferredIndex(q.redis.redis);
    await waitFor(() => entryOf(index, second.queueId), { what: 'the second message deferred' });
    // let every DATA through from now on
    busy.behaviour.data = undefined;
    hold!();
    await waitFor(() => busy.received.length === 2, { what: 'both delivered', timeoutMs: 60_000 });
    await waitFor(async () => (await entryOf(index, second.queueId)) === null, {
      what: 'the index entry cleared',
    });
    assert.match((await queueCmdOn(q, '200ms', 'list')).out, /Mail queue is empty/);
  },
);

test(
  'classic delay queues of an earlier release: the empty one goes, the mail in the other is still found',
  { timeout: 120_000 },
  async (t) => {
    const port = await freePort();
    const q = await platformWithMx(t, 'old.test', '127.0.0.15');
    const old = await startRemoteMta('127.0.0.15', port);
    t.after(() => old.close());

    // what a relay of an earlier release left: classic delay queues, one holding a message
    const bus = q.inboundRt.bus;
    await bus.declareQueues(
      (
        [
          ['outbound.delay.5m', 300_000],
          ['outbound.delay.1h', 3_600_000],
        ] as const
      ).map(([name, ttl]) => ({
        name,
        bindings: [{ exchange: MAIL_EXCHANGE, key: name }],
        arguments: {
          'x-queue-type': 'classic',
          'x-message-ttl': ttl,
          'x-dead-letter-exchange': MAIL_EXCHANGE,
          'x-dead-letter-routing-key': RoutingKeys.outbound,
        },
      })),
    );
    const env = envelope('old@example.test', ['someone@old.test'], {
      attempts: 1,
      lastError: '452 4.2.2 Mailbox full',
    });
    await bus.publish({
      routingKey: 'outbound.delay.1h',
      body: Buffer.from(simpleMessage(env.mailFrom, 'someone@old.test', 'left-over')),
      headers: {
        [MailMessages.outbound.header]: JSON.stringify(env),
        [MailMessages.outbound.versionHeader]: env.v,
      },
    });
    await new DeferredIndex(q.redis.redis).add({
      queueId: env.queueId,
      mailFrom: env.mailFrom,
      recipients: env.recipients,
      attempts: 1,
      lastError: '452 4.2.2 Mailbox full',
      receivedAt: env.receivedAt,
      nextTry: new Date(Date.now() + 3_600_000).toISOString(),
      queue: 'outbound.delay.1h',
      size: 100,
    });

    const declared = async (name: string) => (await bus.inspectQueue(name)) !== null;
    const own = await startRelay(q, { outbound_port: port, outbound_retry_schedule: '5m, 1h' });
    t.after(() => own.stop());
    await waitFor(async () => !(await declared('outbound.delay.5m')), {
      what: 'the empty old queue removed',
    });
    assert.ok(await declared('outbound.retry.5m'), 'the new delay queues are declared');
    assert.equal(await queueDepth(q.vhost.name, 'outbound.delay.1h'), 1, 'the old queue with mail is kept');

    // while the queue tool holds the message (a classic queue then counts as empty), the
    // old queue is not removed with it
    let release!: () => void;
    const holding = new Promise<void>((r) => (release = r));
    let taken!: () => void;
    const held = new Promise<void>((r) => (taken = r));
    const reading = withScanLease(
      q.redis.redis,
      () => new Error('busy'),
      () =>
        bus.browse('outbound.delay.1h', async () => {
          taken();
          await holding;
          return 'keep';
        }),
    );
    await held;
    await assert.rejects(
      removeEmptyQueues(bus, q.redis.redis, ['outbound.delay.1h']),
      /queue tool is reading/,
    );
    release();
    await reading;
    assert.equal(await queueDepth(q.vhost.name, 'outbound.delay.1h'), 1, 'the message is still there');

    assert.match((await queueCmdOn(q, '5m, 1h', 'list')).out, new RegExp(env.queueId));
    const retry = await queueCmdOn(q, '5m, 1h', 'retry', env.queueId);
    assert.equal(retry.err, null);
    await waitFor(() => old.received.some((m) => m.data.toString().includes('Subject: left-over')), {
      what: 'the left-over message delivered',
    });
  },
);

test(
  'the messages of one queue id: each listed and shown, one coming back leaves the others, delete takes all',
  { timeout: 120_000 },
  async (t) => {
    const port = await freePort();
    const q = await platformWithMx(t, 'parts.test', '127.0.0.16');
    // early@ is taken at its second try, the others never
    const remote = await startRemoteMta('127.0.0.16', port, {
      rcpt: (a, n) =>
        a === 'early@parts.test' && n > 1 ? undefined : { code: 452, message: '4.2.2 Mailbox full' },
    });
    t.after(() => remote.close());
    const schedule = '1s, 1h, 2h';
    const own = await startRelay(q, {
      outbound_port: port,
      outbound_retry_schedule: schedule,
      delay_warning_time: 0,
    });
    t.after(() => own.stop());
    const queueCmdHere = (...args: string[]) => queueCmdOn(q, schedule, ...args);

    // as delivery hands outbound the members of an alias outside our domains: several
    // messages under the message's queue id, here after different numbers of attempts,
    // so that they wait in different delay queues
    const base = envelope('ann@example.test', ['early@parts.test']);
    const part = (recipients: string[], attempts: number) =>
      queueOutbound(
        q,
        { ...base, recipients, attempts, lastError: attempts ? '452 4.2.2 Mailbox full' : null },
        simpleMessage(base.mailFrom, 'list@example.test', 'split-in-parts'),
      );
    await part(['mid@parts.test'], 1);
    await part(['late1@parts.test', 'late2@parts.test'], 2);
    for (const queue of ['outbound.retry.1h', 'outbound.retry.2h'])
      await waitFor(async () => (await queueDepth(q.vhost.name, queue)) === 1, { what: `one in ${queue}` });
    await waitFor(async () => (await new DeferredIndex(q.redis.redis).list()).length === 2, {
      what: 'both indexed',
    });

    const recipientsIn = (out: string) =>
      ['early', 'mid', 'late1', 'late2'].filter((r) => out.includes(`${r}@parts.test`));
    const list = await queueCmdHere('list');
    assert.equal(list.err, null);
    assert.deepEqual(recipientsIn(list.out), ['mid', 'late1', 'late2'], list.out);
    assert.equal(list.out.split(base.queueId).length - 1, 1, 'one block for the queue id, as mailq');
    assert.match(list.out, /attempts 2, next try .*\n.*\n {4}mid@parts\.test/);
    assert.match(list.out, /attempts 3, next try .*\n.*\n {4}late1@parts\.test\n {4}late2@parts\.test/);
    assert.match(list.out, /-- 1 deferred message \(in 2 parts\)/);
    const json = (await queueCmdHere('list', '--json')).out.trim().split('\n');
    assert.deepEqual(
      json.map((l) => (JSON.parse(l) as { queueId: string; queue: string }).queue),
      ['outbound.retry.1h', 'outbound.retry.2h'],
    );
    const show = await queueCmdHere('show', base.queueId);
    assert.equal(show.err, null);
    assert.deepEqual(recipientsIn(show.out), ['mid', 'late1', 'late2'], show.out);
    assert.match(show.out, /Subject: split-in-parts/);

    // another message of the queue id is deferred, comes back a second later and is delivered
    await part(['early@parts.test'], 0);
    await waitFor(() => remote.received.some((m) => m.to.includes('early@parts.test')), {
      what: 'the early part delivered at its second try',
    });
    const after = await queueCmdHere('list');
    assert.deepEqual(recipientsIn(after.out), ['mid', 'late1', 'late2'], after.out);
    assert.equal((await new DeferredIndex(q.redis.redis).ofQueueId(base.queueId)).length, 2);

    const del = await queueCmdHere('delete', base.queueId);
    assert.equal(del.err, null);
    assert.match(del.out, new RegExp(`deleted ${base.queueId} \\(2 parts\\)`));
    // the broker applies the acknowledgements after the command's channel has closed
    for (const queue of ['outbound.retry.1h', 'outbound.retry.2h'])
      await waitFor(async () => (await queueDepth(q.vhost.name, queue)) === 0, { what: `${queue} emptied` });
    assert.match((await queueCmdHere('list')).out, /Mail queue is empty/);
    assert.deepEqual(await new DeferredIndex(q.redis.redis).ofQueueId(base.queueId), []);
  },
);

test(
  'index entries of an earlier release, keyed by queue id alone: listed, and gone with their message only',
  { timeout: 120_000 },
  async (t) => {
    const port = await freePort();
    const q = await platformWithMx(t, 'old-index.test', '127.0.0.17');
    const remote = await startRemoteMta('127.0.0.17', port);
    t.after(() => remote.close());
    const schedule = '1s, 1h';
    const own = await startRelay(q, { outbound_port: port, outbound_retry_schedule: schedule });
    t.after(() => own.stop());
    const bus = q.inboundRt.bus;
    /** A message deferred by an earlier release: in its delay queue, indexed under its queue id. */
    const deferredBefore = async (env: Envelope, delayMs: number, indexed: boolean) => {
      await bus.publishDelayed(
        delayMs,
        Buffer.from(simpleMessage(env.mailFrom, env.recipients[0]!, 'old')),
        env,
      );
      if (!indexed) return;
      const entry: DeferredEntry = {
        queueId: env.queueId,
        mailFrom: env.mailFrom,
        recipients: env.recipients,
        attempts: env.attempts,
        lastError: env.lastError,
        receivedAt: env.receivedAt,
        nextTry: new Date(Date.now() + delayMs).toISOString(),
        queue: `outbound.retry.${delayMs === 1000 ? '1s' : '1h'}`,
        size: 100,
      };
      await q.redis.redis.hset(DEFERRED_INDEX_KEY, env.queueId, JSON.stringify(entry));
    };
    const tried = { attempts: 1, lastError: '452 4.2.2 Mailbox full' };
    const back = envelope('ann@example.test', ['back@old-index.test'], tried);
    const stays = envelope('ben@example.test', ['stays@old-index.test'], tried);
    const another = { ...stays, recipients: ['another@old-index.test'] };
    await deferredBefore(stays, 3_600_000, true);
    await deferredBefore(back, 1000, true);
    // a message of the same queue id as `stays`, whose entry the old index had lost to it
    await deferredBefore(another, 1000, false);
    await waitFor(() => remote.received.length === 2, { what: 'both due messages delivered' });
    const index = new DeferredIndex(q.redis.redis);
    await waitFor(async () => !(await index.ofQueueId(back.queueId)).length, {
      what: "the returned message's old entry removed",
    });
    assert.deepEqual(
      (await index.ofQueueId(stays.queueId)).map((e) => e.recipients),
      [['stays@old-index.test']],
      "the other message's entry kept",
    );

    const list = await queueCmdOn(q, schedule, 'list');
    assert.match(
      list.out,
      new RegExp(`${stays.queueId} .* from <ben@example\\.test>[^]*stays@old-index\\.test`),
    );
    const del = await queueCmdOn(q, schedule, 'delete', stays.queueId);
    assert.equal(del.err, null);
    assert.deepEqual(await index.ofQueueId(stays.queueId), []);
  },
);

test(
  'a relay on a schedule of its own: its deferred mail listed, shown and retried by a command not told the schedule',
  { timeout: 60_000 },
  async (t) => {
    const port = await freePort();
    const q = await platformWithMx(t, 'own-schedule.test', '127.0.0.18');
    let take = false;
    const remote = await startRemoteMta('127.0.0.18', port, {
      rcpt: () => (take ? undefined : { code: 452, message: '4.2.2 Mailbox full' }),
    });
    t.after(() => remote.close());
    // a delay none of the default schedule's
    const own = await startRelay(q, { outbound_port: port, outbound_retry_schedule: '45m' });
    t.after(() => own.stop());
    const env = envelope('ann@example.test', ['full@own-schedule.test']);
    await queueOutbound(q, env, simpleMessage(env.mailFrom, env.recipients[0]!, 'own-schedule'));
    const index = new DeferredIndex(q.redis.redis);
    await waitFor(() => entryOf(index, env.queueId), { what: 'deferred' });
    await waitFor(async () => (await queueDepth(q.vhost.name, 'outbound.retry.45m')) === 1, {
      what: 'the message in the delay queue of the schedule',
    });

    // as an operator's shell, or the console's container, without the relay's settings
    assert.match((await queueCmdOn(q, null, 'list')).out, new RegExp(`${env.queueId} .* from <ann@`));
    assert.match((await queueCmdOn(q, null, 'show', env.queueId)).out, /Subject: own-schedule/);
    // its entry missing, as when Redis refused it at the deferral: --all still finds it
    await index.remove(env.queueId, env.recipients);
    take = true;
    const retry = await queueCmdOn(q, null, 'retry', '--all');
    assert.equal(retry.err, null);
    assert.equal(retry.out, '1 message queued for delivery\n');
    await waitFor(() => remote.received.some((m) => m.data.toString().includes('Subject: own-schedule')), {
      what: 'delivery after the retry',
    });
  },
);
