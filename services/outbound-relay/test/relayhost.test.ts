import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { DeferredIndex } from '@mailyard/queue-admin';
import { tempDir, waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import {
  entryOf,
  envelope,
  freePort,
  queueOutbound,
  simpleMessage,
  startRelay,
  startRemoteMta,
  startScriptedMta,
  tlsPair,
  type RelayHandle,
  type RemoteMta,
} from './helpers.js';

// Everything goes through the smarthost (127.0.0.7, certificate for smarthost.test that
// the relay trusts through SMTP_TLS_CA_FILE), never to the recipient domain's MX
// (127.0.0.8).
let p: Platform;
let relay: RelayHandle;
let smarthost: RemoteMta;
let directMx: RemoteMta;
const tmp = tempDir();

before(async () => {
  const port = await freePort();
  p = await startPlatform({
    zone: {
      'smarthost.test': { A: ['127.0.0.7'] },
      'faraway.test': { MX: [{ priority: 10, exchange: 'mx.faraway.test' }] },
      'mx.faraway.test': { A: ['127.0.0.8'] },
    },
  });
  await addAccount(p.directory, 'alice@example.test');
  const pair = tlsPair('smarthost.test');
  const caFile = join(tmp.path, 'ca.pem');
  writeFileSync(caFile, pair.cert);
  smarthost = await startRemoteMta('127.0.0.7', port, {
    tls: pair,
    auth: { user: 'relayuser', pass: 's3cret pass' },
  });
  directMx = await startRemoteMta('127.0.0.8', port);
  relay = await startRelay(p, {
    relayhost: `[smarthost.test]:${port}`,
    relayhost_username: 'relayuser',
    relayhost_password: 's3cret pass',
    smtp_tls_ca_file: caFile,
    outbound_port: port,
    outbound_retry_schedule: '200ms',
    delay_warning_time: 0,
    smtp_connection_cache_time_limit: '200ms',
  });
});

after(async () => {
  await relay?.stop();
  await smarthost?.close();
  await directMx?.close();
  await p?.close();
  tmp.cleanup();
});

test('mail goes through the relayhost, over verified TLS, authenticated', async () => {
  await queueOutbound(
    p,
    envelope('alice@example.test', ['zoe@faraway.test']),
    simpleMessage('alice@example.test', 'zoe@faraway.test', 'via-smarthost'),
  );
  const got = await waitFor(() =>
    smarthost.received.find((m) => m.data.toString().includes('Subject: via-smarthost')),
  );
  assert.ok(got.secure);
  assert.equal(got.user, 'relayuser');
  assert.deepEqual(got.to, ['zoe@faraway.test']);
  assert.equal(directMx.sessions, 0, 'the MX of the recipient domain was never contacted');
});

test('refused credentials defer (never bounce), and nothing is sent', async () => {
  // a session authenticated earlier stays good until it is closed: wait for that
  await waitFor(() => smarthost.open === 0, { what: 'the idle session to close' });
  smarthost.behaviour.auth = { user: 'relayuser', pass: 'rotated' };
  try {
    const env = envelope('alice@example.test', ['yan@faraway.test']);
    await queueOutbound(p, env, simpleMessage('alice@example.test', 'yan@faraway.test', 'bad-credentials'));
    const index = new DeferredIndex(p.redis.redis);
    const entry = await waitFor(() => entryOf(index, env.queueId));
    assert.match(entry.lastError ?? '', /SASL authentication failed.*535/);
    assert.equal(p.inbox('alice@example.test').length, 0, 'no bounce');
  } finally {
    smarthost.behaviour.auth = { user: 'relayuser', pass: 's3cret pass' };
  }
  await waitFor(
    () => smarthost.received.find((m) => m.data.toString().includes('Subject: bad-credentials')),
    {
      what: 'delivery once the credentials match again',
    },
  );
});

test('a relayhost that refuses HELO with 5xx: deferred, never bounced', async () => {
  // a relay of its own: the one above would take the message from the shared queue
  const q = await startPlatform();
  const port = await freePort();
  const refusing = await startScriptedMta('127.0.0.17', port, {
    ehlo: '550 5.7.1 No EHLO from you',
    helo: '550 5.7.1 Relaying from your address is not allowed',
  });
  const own = await startRelay(q, {
    relayhost: `[127.0.0.17]:${port}`,
    outbound_port: port,
    outbound_retry_schedule: '1h',
    delay_warning_time: 0,
  });
  try {
    await addAccount(q.directory, 'alice@example.test');
    const env = envelope('alice@example.test', ['xena@faraway.test']);
    await queueOutbound(q, env, simpleMessage('alice@example.test', 'xena@faraway.test', 'helo-refused'));
    const entry = await waitFor(() => entryOf(new DeferredIndex(q.redis.redis), env.queueId), {
      what: 'the deferral',
    });
    assert.match(
      entry.lastError ?? '',
      /refused to talk to me: 550 5\.7\.1 Relaying .* \(in reply to HELO command\)/,
    );
    assert.equal(q.inbox('alice@example.test').length, 0, 'no bounce');
  } finally {
    await own.stop();
    await refusing.close();
    await q.close();
  }
});

test('a relayhost on this host on another port (a content filter) is no loop', async () => {
  // Postfix detects loops on the SMTP port only: a filter or a second MTA of this host, on
  // another port, at our own address and under our own name, is a relayhost like any other
  const q = await startPlatform({ zone: { 'filter.test': { A: ['127.0.0.1'] } } });
  const [port, filterPort] = [await freePort(), await freePort()];
  const pair = tlsPair('filter.test');
  const caFile = join(tmp.path, 'filter-ca.pem');
  writeFileSync(caFile, pair.cert);
  const filter = await startRemoteMta('127.0.0.1', filterPort, { tls: pair, name: 'mx.mailyard.test' });
  const own = await startRelay(q, {
    relayhost: `[filter.test]:${filterPort}`,
    smtp_tls_ca_file: caFile,
    outbound_port: port,
    outbound_retry_schedule: '1h',
    delay_warning_time: 0,
    inet_interfaces: 'all',
  });
  try {
    await addAccount(q.directory, 'alice@example.test');
    const env = envelope('alice@example.test', ['xena@faraway.test']);
    await queueOutbound(q, env, simpleMessage('alice@example.test', 'xena@faraway.test', 'local-filter'));
    await waitFor(() => filter.received.length === 1, { what: 'the message at the local filter' });
    assert.deepEqual(filter.received[0]!.to, ['xena@faraway.test']);
  } finally {
    await own.stop();
    await filter.close();
    await q.close();
  }
});
