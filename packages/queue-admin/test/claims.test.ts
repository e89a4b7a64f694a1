// Claims (../src/claims.ts) against the machine's Redis, under a key prefix of their own.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { Claims } from '../src/claims.js';

const prefix = `test:${randomBytes(4).toString('hex')}:`;
const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { keyPrefix: prefix });
after(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys.map((k) => k.slice(prefix.length)));
  redis.disconnect();
});

/** Polls `cond` until it holds; throws after 10 s. */
async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a claim is taken once, beside a record that says it was done', { timeout: 10_000 }, async () => {
  const claims = new Claims(redis, 10_000);
  await redis.set('rec:b', 'done');
  assert.deepEqual(await claims.take('one', ['c:a', 'c:b'], ['rec:a', 'rec:b']), ['taken', 'done']);
  assert.deepEqual(await claims.take('two', ['c:a', 'c:c']), ['busy', 'taken']);
  assert.equal(await redis.get('c:a'), 'one');
});

test('only the holder renews or releases its claims, all of them at once', { timeout: 10_000 }, async () => {
  const claims = new Claims(redis, 10_000);
  await claims.take('mine', ['r:a', 'r:b']);
  await claims.take('theirs', ['r:c']);
  await redis.pexpire('r:a', 1_000);
  assert.deepEqual(await claims.renew('mine', ['r:a', 'r:b', 'r:c', 'r:none']), [true, true, false, false]);
  assert.ok((await redis.pttl('r:a')) > 5_000, 'renewed to the full time');
  await claims.release('mine', ['r:a', 'r:b', 'r:c']);
  assert.deepEqual(await redis.exists('r:a', 'r:b'), 0);
  assert.equal(await redis.get('r:c'), 'theirs', "another's claim kept");
});

test('a claim lapses when its holder stops renewing it', { timeout: 10_000 }, async () => {
  const claims = new Claims(redis, 50);
  assert.deepEqual(await claims.take('dead', ['l:a']), ['taken']);
  const deadline = Date.now() + 5_000;
  while ((await claims.take('next', ['l:a']))[0] !== 'taken') {
    assert.ok(Date.now() < deadline, 'the claim lapsed');
    await new Promise((r) => setTimeout(r, 20));
  }
});

test(
  'claims held around work outlast their time, and one taken by another meanwhile is logged',
  { timeout: 30_000 },
  async () => {
    // renewed every third of it: a lease that a busy machine's late timers do not let lapse
    const LEASE_MS = 1500;
    const claims = new Claims(redis, LEASE_MS);
    await claims.take('mine', ['h:a', 'h:b']);
    const warnings: { fields: object; msg: string }[] = [];
    const log = { warn: (fields: object, msg: string) => warnings.push({ fields, msg }) };
    const done = await claims.holding('mine', ['h:a', 'h:b'], log, async () => {
      await new Promise((r) => setTimeout(r, LEASE_MS + 500));
      assert.ok((await redis.pttl('h:a')) > 0, 'held past its time');
      // another holder's since (this one stalled past it): not renewed, logged
      await redis.set('h:b', 'theirs', 'PX', 30_000);
      await until(() => warnings.length > 0, 'the claim taken meanwhile logged');
      return 'done';
    });
    assert.equal(done, 'done');
    assert.equal(await redis.get('h:b'), 'theirs', "another's claim not extended");
    assert.deepEqual(warnings.at(-1), {
      fields: { claims: ['h:b'] },
      msg: 'claims lapsed before being renewed',
    });
    // renewals stop with the work
    await until(async () => (await redis.exists('h:a')) === 0, 'h:a to lapse once the work ended');
  },
);

test(
  'a thing done once: claimed, sent, recorded, let go of; what failed says what was kept',
  { timeout: 10_000 },
  async () => {
    const claims = new Claims(redis, 10_000);
    const log = { warn: () => undefined };
    const how = (send: (due: string[]) => Promise<unknown>, wait = false) => ({
      claim: (i: string) => `o:claim:${i}`,
      record: (i: string) => `o:record:${i}`,
      recorded: { value: 'sent', seconds: 60 },
      wait,
      send,
      log,
    });
    await redis.set('o:record:done', 'sent');
    await redis.set('o:claim:busy', 'another', 'PX', 10_000);
    const sent: string[][] = [];
    const send = async (due: string[]) => sent.push(due);
    assert.deepEqual(await claims.once(['a', 'done', 'busy', 'b'], how(send)), {
      kind: 'done',
      sent: ['a', 'b'],
    });
    assert.deepEqual(sent, [['a', 'b']], 'one send for those claimed, none for the others');
    assert.equal(await redis.get('o:record:a'), 'sent');
    assert.ok((await redis.ttl('o:record:a')) > 0);
    assert.equal(await redis.exists('o:claim:a', 'o:claim:b'), 0, 'let go of once recorded');
    assert.equal(await redis.get('o:claim:busy'), 'another');

    // waited for: the other holder records it meanwhile, nothing is left to do
    setTimeout(() => void redis.set('o:record:busy', 'sent'), 100);
    assert.deepEqual(await claims.once(['busy'], how(send, true)), { kind: 'done', sent: [] });

    const err = new Error('broker gone');
    const unsent = await claims.once(
      ['c'],
      how(() => Promise.reject(err)),
    );
    assert.deepEqual(unsent, { kind: 'unsent', err });
    assert.equal(await redis.exists('o:claim:c', 'o:record:c'), 0, 'let go of at once, not recorded');

    // the record's write fails (a value Redis refuses to expire by): the claim is kept
    const unrecorded = await claims.once(['d'], { ...how(send), recorded: { value: 'sent', seconds: -1 } });
    assert.equal(unrecorded.kind, 'unrecorded');
    assert.equal(await redis.exists('o:claim:d'), 1, 'kept until it lapses');
  },
);

test(
  'what was claimed is kept while another run is waited for, past its own lease',
  { timeout: 20_000 },
  async () => {
    const LEASE_MS = 1500;
    const claims = new Claims(redis, LEASE_MS);
    const log = { warn: () => undefined };
    const how = (send: (due: string[]) => Promise<unknown>) => ({
      claim: (i: string) => `w:claim:${i}`,
      record: (i: string) => `w:record:${i}`,
      recorded: { value: 'sent', seconds: 60 },
      wait: true,
      send,
      log,
    });
    // another live run holds "busy" for four leases (renewing it), then records it
    assert.deepEqual(await claims.take('other', ['w:claim:busy']), ['taken']);
    const other = setInterval(() => void claims.renew('other', ['w:claim:busy']), LEASE_MS / 3);
    setTimeout(() => {
      clearInterval(other);
      void redis.set('w:record:busy', 'sent').then(() => claims.release('other', ['w:claim:busy']));
    }, 4 * LEASE_MS);
    const sent: string[][] = [];
    const waiting = claims.once(
      ['mine', 'busy'],
      how(async (due) => sent.push(due)),
    );
    // meanwhile a third run, past the first's lease, must not find "mine" free
    await new Promise((r) => setTimeout(r, 2 * LEASE_MS));
    const third = await claims.once(['mine'], { ...how(async (due) => sent.push(due)), wait: false });
    assert.deepEqual(third, { kind: 'done', sent: [] }, 'the third run found it held');
    assert.deepEqual(await waiting, { kind: 'done', sent: ['mine'] });
    assert.deepEqual(sent, [['mine']], 'sent once');
  },
);
