import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { waitFor } from '@mailyard/testkit';
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

// Sessions kept open between messages (Postfix's connection cache). Remote MTAs:
// 127.0.0.10 (cache.test), 127.0.0.11 (hangup.test: closes sessions idle for 150 ms),
// 127.0.0.13 (mx.shared.test, the MX of both one.test and two.test); the slot test
// has a platform and 127.0.0.12 (narrow.test) of its own.
let p: Platform;
let relay: RelayHandle;
let cached: RemoteMta;
let hangup: RemoteMta;
let shared: RemoteMta;
let port: number;
// how long the relay keeps an idle session: longer than a busy machine takes between one
// message's end and the next's start, which must find the session still there
const IDLE_MS = 5000;

before(async () => {
  port = await freePort();
  p = await startPlatform({
    withDelivery: false,
    zone: {
      'cache.test': { MX: [{ priority: 10, exchange: 'mx.cache.test' }] },
      'mx.cache.test': { A: ['127.0.0.10'] },
      'hangup.test': { MX: [{ priority: 10, exchange: 'mx.hangup.test' }] },
      'mx.hangup.test': { A: ['127.0.0.11'] },
      'one.test': { MX: [{ priority: 10, exchange: 'mx.shared.test' }] },
      'two.test': { MX: [{ priority: 10, exchange: 'mx.shared.test' }] },
      'mx.shared.test': { A: ['127.0.0.13'] },
    },
  });
  cached = await startRemoteMta('127.0.0.10', port);
  hangup = await startRemoteMta('127.0.0.11', port, { idleTimeoutMs: 150 });
  shared = await startRemoteMta('127.0.0.13', port);
  relay = await startRelay(p, {
    outbound_port: port,
    outbound_retry_schedule: '200ms',
    smtp_connection_cache_time_limit: `${IDLE_MS}ms`,
    default_destination_concurrency_limit: 1,
  });
});

after(async () => {
  await relay?.stop();
  await Promise.all([cached, hangup, shared].map((m) => m?.close()));
  await p?.close();
});

const send = async (domain: string, subject: string, on = p) => {
  const to = `user@${domain}`;
  await queueOutbound(
    on,
    envelope('sender@example.test', [to]),
    simpleMessage('sender@example.test', to, subject),
  );
};
/**
 * Waits until the relay is done with the `n`th message to `domain`: its session parked,
 * not only its data at the remote MTA. The next message sent before that would find no
 * session to take, and the slot held by the one still finishing.
 */
const done = (domain: string, n: number) =>
  waitFor(
    async () => (await counterValue(relay.rt, 'mailyard_outbound_relay_attempts_total', { domain })) >= n,
    { what: `${n} messages to ${domain} done` },
  );
const arrived = (mta: RemoteMta, subject: string, timeoutMs?: number) =>
  waitFor(() => mta.received.find((m) => m.data.toString().includes(`Subject: ${subject}\r\n`)), {
    what: subject,
    timeoutMs,
  });

test('messages one after another share one session, closed after the idle limit', async () => {
  for (let i = 0; i < 5; i++) {
    await send('cache.test', `reuse-${i}`);
    await arrived(cached, `reuse-${i}`);
    await done('cache.test', i + 1);
  }
  assert.equal(cached.sessions, 1, 'one connection for five messages');
  assert.ok(
    cached.received.every((m) => m.secure),
    'every message over the STARTTLS of the kept session',
  );
  assert.equal(cached.open, 1, 'still open while idle');
  assert.equal(await counterValue(relay.rt, 'mailyard_outbound_relay_sessions_total', { reused: 'yes' }), 4);
  // QUIT after the idle limit, not kept forever
  await waitFor(() => cached.open === 0, { timeoutMs: 3 * IDLE_MS, what: 'the idle session to close' });
  assert.deepEqual(cached.transactionsPerSession, [5]);
  // the next message opens a new one
  await send('cache.test', 'after-idle');
  await arrived(cached, 'after-idle');
  assert.equal(cached.sessions, 2);
  // and resumes the TLS session of the first: no full handshake
  assert.equal(
    await counterValue(relay.rt, 'mailyard_outbound_relay_tls_handshakes_total', { resumed: 'no' }),
    1,
  );
  assert.equal(
    await counterValue(relay.rt, 'mailyard_outbound_relay_tls_handshakes_total', { resumed: 'yes' }),
    1,
  );
});

test('a session the server closed while idle is replaced, and the message still goes out', async () => {
  await send('hangup.test', 'first');
  await arrived(hangup, 'first');
  // the server times the idle session out (421, then close) before the relay does
  await waitFor(() => hangup.open === 0, { what: 'the server to close the idle session' });
  await send('hangup.test', 'second');
  await arrived(hangup, 'second');
  assert.equal(hangup.sessions, 2);
  assert.equal(
    await counterValue(relay.rt, 'mailyard_outbound_relay_attempts_total', {
      domain: 'hangup.test',
      result: 'deferred',
    }),
    0,
    'nothing deferred',
  );
});

test(
  'mail waiting for a slot is not starved by idle sessions; the limit holds',
  { timeout: 180_000 },
  async (t) => {
    // An idle session keeps its slot for 10 minutes here, longer than a message waits for
    // one (60 s): a message left waiting behind a parked session is deferred, whatever the
    // machine's speed, and six deliveries in a row fit in the wait on any machine.
    const q = await startPlatform({
      withDelivery: false,
      zone: {
        'narrow.test': { MX: [{ priority: 10, exchange: 'mx.narrow.test' }] },
        'mx.narrow.test': { A: ['127.0.0.12'] },
      },
    });
    t.after(() => q.close());
    // slow enough that a burst queues up behind the one slot
    const narrow = await startRemoteMta('127.0.0.12', port, {
      data: () => new Promise((r) => setTimeout(() => r(undefined), 20)),
    });
    t.after(() => narrow.close());
    const own = await startRelay(q, {
      outbound_port: port,
      outbound_retry_schedule: '200ms',
      smtp_connection_cache_time_limit: '600s',
      default_destination_concurrency_limit: 1,
      destination_slot_wait: '60s',
    });
    t.after(() => own.stop());
    const N = 6;
    await Promise.all(Array.from({ length: N }, (_, i) => send('narrow.test', `burst-${i}`, q)));
    for (let i = 0; i < N; i++) await arrived(narrow, `burst-${i}`, 90_000);
    assert.equal(narrow.maxConcurrent, 1, 'never two sessions to a destination limited to one');
    assert.equal(
      await counterValue(own.rt, 'mailyard_outbound_relay_attempts_total', {
        domain: 'narrow.test',
        result: 'deferred',
      }),
      0,
      'nothing deferred for want of a slot',
    );
  },
);

test('domains hosted on the same MX share a kept session', async () => {
  await send('one.test', 'for-one');
  await arrived(shared, 'for-one');
  await done('one.test', 1);
  await send('two.test', 'for-two');
  await arrived(shared, 'for-two');
  assert.equal(shared.sessions, 1, 'the session kept after one.test carried the message for two.test');
  assert.deepEqual(
    shared.received.map((m) => m.to),
    [['user@one.test'], ['user@two.test']],
  );
});
