import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { outboundDelayQueue, type Envelope } from '@mailyard/contracts';
import { interleavedRedis, queueDepths, startTcpProxy, waitFor } from '@mailyard/testkit';
import { addAccount, type Platform } from '../../../test/harness.js';
import {
  envelope,
  queueOutbound,
  relayTestbed,
  simpleMessage,
  type RelayHandle,
  type RelayTestbed,
  type RemoteMta,
} from './helpers.js';
import { SENDING_CLAIM_MS, WARNING_CLAIM_MS } from '../src/relay.js';

// Postfix's delay_warning_time across instances: a receiver that answers 4xx until a test
// lets it take the mail, senders in a local domain (their warnings land in their INBOX).
let bed: RelayTestbed;
let p: Platform;
let mx: RemoteMta;
/** Whether the receiver takes mail (451 to every RCPT until then). */
let taking = false;
let child: ChildProcess | null = null;
const relays: RelayHandle[] = [];

const RETRY = '200ms';

before(async () => {
  bed = await relayTestbed({
    zone: {
      'late.test': { MX: [{ priority: 10, exchange: 'mx.late.test' }] },
      'mx.late.test': { A: ['127.0.0.14'] },
    },
  });
  p = bed.p;
  mx = await bed.remote('127.0.0.14', {
    rcpt: () => (taking ? undefined : { code: 451, message: '4.3.0 Try again later' }),
  });
});

after(() => bed?.close());

/** An in-process instance, warning of a delay past 1 s (its Redis changed by `redis`). */
async function startInstance(redis?: (own: Redis) => Redis): Promise<RelayHandle> {
  const r = await bed.relay(
    { outbound_retry_schedule: RETRY, delay_warning_time: '1s' },
    redis ? { redis } : {},
  );
  relays.push(r);
  return r;
}

/** A message from `sender` (an account, added now) to `rcpts`, a minute old: past the warning. */
async function lateMessage(sender: string, rcpts: string[]): Promise<Envelope> {
  await addAccount(p.directory, sender);
  return envelope(sender, rcpts, { receivedAt: new Date(Date.now() - 60_000).toISOString() });
}

const queue = (env: Envelope) =>
  queueOutbound(p, env, simpleMessage(env.mailFrom, env.recipients[0]!, `late-${env.queueId}`));

/** The recipients each delay warning about `env` in its sender's INBOX names, sorted. */
const warnings = (env: Envelope): string[][] =>
  p
    .inbox(env.mailFrom)
    .map((f) => readFileSync(f, 'utf8'))
    .filter((m) => m.includes(`X-Mailyard-Queue-ID: ${env.queueId}`) && m.includes('Action: delayed'))
    .map((m) => [...m.matchAll(/^Final-Recipient: rfc822; ?(\S+)\r$/gm)].map((r) => r[1]!).sort());

/** Copies of the message each of `env`'s recipients got. */
const copies = (env: Envelope) =>
  env.recipients.map((r) => mx.received.filter((m) => m.to.includes(r)).length);

/**
 * The receiver takes the mail; once every recipient has it and nothing of the test's is
 * queued any more (the retries run, the DSNs filed), so that no run is left to send a
 * warning later: the sender got one delay warning, naming every recipient, and each
 * recipient one copy.
 */
async function assertOneWarning(env: Envelope): Promise<void> {
  taking = true;
  await waitFor(() => copies(env).every((n) => n > 0), { timeoutMs: 20_000, what: 'the mail taken' });
  await waitFor(
    async () => {
      const depths = await queueDepths(p.vhost.name);
      return ['outbound', 'delivery', outboundDelayQueue(200)].every((q) => !depths.get(q));
    },
    { timeoutMs: 20_000, what: 'every queue drained' },
  );
  assert.deepEqual(warnings(env), [[...env.recipients].sort()], 'one warning naming every recipient');
  assert.deepEqual(
    copies(env),
    env.recipients.map(() => 1),
    'one copy each',
  );
}

const digest = (rcpt: string) => createHash('sha256').update(rcpt).digest('hex').slice(0, 16);
/** The claim a run takes on the delay warning that names `rcpt` of `env`. */
const warningClaim = (env: Envelope, rcpt: string) => `outbound:warning:${env.queueId}:${digest(rcpt)}`;
/** The record that a delay warning named `rcpt` of `env`. */
const warningRecord = (env: Envelope, rcpt: string) => `outbound:warned:${env.queueId}:${digest(rcpt)}`;

test(
  'an instance killed as it publishes a delay warning: after a restart the sender gets it, once',
  { timeout: 180_000 },
  async (t) => {
    taking = false;
    const env = await lateMessage('owner@local.test', ['late1@late.test', 'late2@late.test']);
    // between the instance and RabbitMQ: the warning's publish never reaches the broker,
    // and the instance is killed as it sends it, waiting for its confirm
    let atPublish: () => void = () => undefined;
    const publishing = new Promise<void>((r) => (atPublish = r));
    const broker = await startTcpProxy(
      { host: '127.0.0.1', port: 5672 },
      { withholdFrom: { marker: 'Action: delayed', onWithheld: () => atPublish() } },
    );
    t.after(() => broker.close());
    const amqp = new URL(p.vhost.url);
    amqp.port = String(broker.port);
    child = await bed.spawn({ AMQP_URL: amqp.toString(), DELAY_WARNING_TIME: '1s' });
    await queue(env);
    await publishing;
    child.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));
    child = null;
    // a claim the dead instance left on the warning lapses by itself; here at once, as if
    // its time had passed
    for (const rcpt of env.recipients) {
      const claim = warningClaim(env, rcpt);
      const ttl = await p.redis.redis.pttl(claim);
      if (ttl === -2) continue;
      assert.ok(ttl > 0 && ttl <= WARNING_CLAIM_MS, `${claim} lapses (${ttl} ms)`);
      await p.redis.redis.pexpire(claim, 1);
    }

    // the unacked message is back in `outbound`, its retry in the delay queue: both run
    // once the dead instance's claims on the recipients have lapsed (SENDING_CLAIM_MS)
    await startInstance();
    await waitFor(() => warnings(env).length > 0, {
      timeoutMs: 20_000 + SENDING_CLAIM_MS,
      what: 'the delay warning after the restart',
    });
    await assertOneWarning(env);
  },
);

test(
  'two instances deferring the same message at the same time: one delay warning',
  { timeout: 120_000 },
  async () => {
    taking = false;
    while (relays.length < 2) await startInstance();
    const env = await lateMessage('pair@local.test', ['late3@late.test', 'late4@late.test']);
    // the same message twice, as a crash between a retry's confirm and its message's ack
    // leaves it, each taken by an instance at once
    await Promise.all([queue(env), queue(env)]);
    await waitFor(() => warnings(env).length > 0, { timeoutMs: 20_000, what: 'the delay warning' });
    const attempts = () => mx.rcptAttempts.get('late3@late.test') ?? 0;
    const warnedAt = attempts();
    await waitFor(() => attempts() >= warnedAt + 2, { timeoutMs: 20_000, what: 'two more attempts' });
    await assertOneWarning(env);
  },
);

test(
  'a delay warning another live run is sending holds up no attempt, and is not sent twice',
  { timeout: 120_000 },
  async () => {
    taking = false;
    if (!relays.length) await startInstance();
    const env = await lateMessage('held@local.test', ['late5@late.test']);
    // another run's claim on the warning, as long as a run's
    const claim = warningClaim(env, 'late5@late.test');
    await p.redis.redis.set(claim, 'another-run', 'PX', WARNING_CLAIM_MS);
    await queue(env);
    // attempt after attempt, well within the claim: none waited for it
    await waitFor(() => (mx.rcptAttempts.get('late5@late.test') ?? 0) >= 3, {
      timeoutMs: 20_000,
      what: 'three attempts',
    });
    await waitFor(async () => !(await queueDepths(p.vhost.name)).get('delivery'), { what: 'DSNs filed' });
    assert.deepEqual(warnings(env), [], 'left to the run that holds it');
    // that run died before its warning was confirmed: its claim lapses, a later attempt warns
    await p.redis.redis.pexpire(claim, 1);
    await waitFor(() => warnings(env).length > 0, { timeoutMs: 20_000, what: 'the delay warning' });
    await assertOneWarning(env);
  },
);

test(
  'a delay warning sent whose record Redis fails to write: no attempt before its claim lapses sends it again',
  { timeout: 120_000 },
  async () => {
    taking = false;
    for (const r of relays.splice(0)) await r.stop();
    const env = await lateMessage('unrecorded@local.test', ['late6@late.test']);
    const record = warningRecord(env, 'late6@late.test');
    // the warning sent, and its record's write fails (undone here, its answer an error)
    await startInstance((own) =>
      interleavedRedis(
        own,
        // the record written by its own script (Claims.record), the first of its keys
        (command, args) => command === 'eval' && args[2] === record,
        async () => {
          await p.redis.redis.del(record);
          throw new Error('Redis is gone');
        },
      ),
    );
    await queue(env);
    await waitFor(() => warnings(env).length > 0, { timeoutMs: 20_000, what: 'the delay warning' });
    const attempts = () => mx.rcptAttempts.get('late6@late.test') ?? 0;
    const warnedAt = attempts();
    await waitFor(() => attempts() >= warnedAt + 3, { timeoutMs: 20_000, what: 'three more attempts' });
    assert.ok((await p.redis.redis.pttl(warningClaim(env, 'late6@late.test'))) > 0, 'the claim kept');
    await assertOneWarning(env);
  },
);
