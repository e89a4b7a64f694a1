import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { queueDepth, waitFor } from '@mailyard/testkit';
import { startPlatform, type Platform } from '../../../test/harness.js';
import {
  counterValue,
  envelope,
  freePort,
  queueOutbound,
  simpleMessage,
  startRelay,
  startRemoteMta,
  type RelayHandle,
  type RemoteMta,
} from './helpers.js';

// Two outbound-relay instances (separate runtimes: own connections, own metrics) as
// competing consumers on one `outbound` queue, sharing the destination limit in Redis.
let p: Platform;
let a: RelayHandle;
let b: RelayHandle;
let mx: RemoteMta;
const LIMIT = 3;

before(async () => {
  const port = await freePort();
  p = await startPlatform({
    withDelivery: false,
    zone: {
      'burst.test': { MX: [{ priority: 10, exchange: 'mx.burst.test' }] },
      'mx.burst.test': { A: ['127.0.0.9'] },
    },
  });
  // a slow receiver, so that deliveries overlap and the limit matters
  mx = await startRemoteMta('127.0.0.9', port, {
    data: () => new Promise((r) => setTimeout(() => r(undefined), 40)),
  });
  const cfg = {
    outbound_port: port,
    outbound_prefetch: 8,
    default_destination_concurrency_limit: LIMIT,
    outbound_retry_schedule: '200ms',
  };
  a = await startRelay(p, cfg);
  b = await startRelay(p, cfg);
});

after(async () => {
  await a?.stop();
  await b?.stop();
  await mx?.close();
  await p?.close();
});

test('two instances share a burst; the per-destination limit holds across both', async () => {
  const N = 40;
  await Promise.all(
    Array.from({ length: N }, (_, i) =>
      queueOutbound(
        p,
        envelope('sender@example.test', [`user${i}@burst.test`]),
        simpleMessage('sender@example.test', `user${i}@burst.test`, `burst-${i}`),
      ),
    ),
  );
  await waitFor(() => mx.received.length >= N, { timeoutMs: 30_000, what: `${N} deliveries` });
  const subjects = new Set(mx.received.map((m) => /Subject: (burst-\d+)/.exec(m.data.toString())?.[1]));
  assert.equal(subjects.size, N, 'every message arrived');
  assert.equal(mx.received.length, N, 'and none twice');
  const delivered = (r: RelayHandle) =>
    counterValue(r.rt, 'mailyard_outbound_relay_attempts_total', { result: 'delivered' });
  // the receiver records a message before its 250 reaches the relay: wait for the relays' count
  await waitFor(async () => (await delivered(a)) + (await delivered(b)) === N, {
    what: 'the relays to count',
  });
  const byA = await delivered(a);
  const byB = await delivered(b);
  assert.ok(byA > 0 && byB > 0, `both instances delivered (${byA} + ${byB})`);
  assert.ok(mx.maxConcurrent <= LIMIT, `at most ${LIMIT} sessions at once, saw ${mx.maxConcurrent}`);
  assert.ok(mx.maxConcurrent >= 2, 'deliveries did run in parallel');
  await waitFor(async () => (await queueDepth(p.vhost.name, 'outbound')) === 0);
});
