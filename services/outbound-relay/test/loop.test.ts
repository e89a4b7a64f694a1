import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DeferredIndex } from '@mailyard/queue-admin';
import { waitFor } from '@mailyard/testkit';
import type { Platform } from '../../../test/harness.js';
import { dsnIn, entryOf, relayTestbed, sendFromAlice, type RelayTestbed, type RemoteMta } from './helpers.js';

// Mail whose MX is this mail system must not be sent to ourselves (Postfix: "mail for X
// loops back to myself", 5.4.6). Our own addresses: every interface address of this host
// (127.0.0.1 among them) and 127.0.0.42, declared in proxy_interfaces as a NAT address.
// 127.0.0.1 and 127.0.0.42: listeners that must never be reached. 127.0.0.41: a better
// MX in front of us. 127.0.0.43: a server that answers EHLO with our own hostname.
// 127.0.0.44: a primary MX that is shutting down (421 greeting).
let bed: RelayTestbed;
let p: Platform;
let self: RemoteMta;
let nat: RemoteMta;
let primary: RemoteMta;
let mirror: RemoteMta;
let closing: RemoteMta;

before(async () => {
  bed = await relayTestbed(
    {
      zone: {
        'selfmx.test': { MX: [{ priority: 10, exchange: 'mx.selfmx.test' }] },
        'mx.selfmx.test': { A: ['127.0.0.1'] },
        // we are the backup MX of backup.test: mail goes to the primary only
        'backup.test': {
          MX: [
            { priority: 10, exchange: 'mx1.backup.test' },
            { priority: 20, exchange: 'mx.selfmx.test' },
          ],
        },
        'mx1.backup.test': { A: ['127.0.0.41'] },
        // the primary has no address: nobody to hand the mail to but ourselves
        'orphan.test': {
          MX: [
            { priority: 10, exchange: 'gone.orphan.test' },
            { priority: 20, exchange: 'mx.selfmx.test' },
          ],
        },
        'nat.test': { MX: [{ priority: 10, exchange: 'mx.nat.test' }] },
        'mx.nat.test': { A: ['127.0.0.42'] },
        'mirror.test': { MX: [{ priority: 10, exchange: 'mx.mirror.test' }] },
        'mx.mirror.test': { A: ['127.0.0.43'] },
        'mirror-backup.test': {
          MX: [
            { priority: 10, exchange: 'mx.closing.test' },
            { priority: 20, exchange: 'mx.mirror.test' },
          ],
        },
        'mx.closing.test': { A: ['127.0.0.44'] },
      },
    },
    ['alice@example.test'],
  );
  p = bed.p;
  self = await bed.remote('127.0.0.1');
  nat = await bed.remote('127.0.0.42');
  primary = await bed.remote('127.0.0.41');
  mirror = await bed.remote('127.0.0.43', { name: 'mx.mailyard.test' });
  closing = await bed.remote('127.0.0.44', {
    greeting: { code: 421, message: '4.3.2 Service shutting down' },
  });
  await bed.relay({
    outbound_retry_schedule: '1h',
    delay_warning_time: 0,
    inet_interfaces: 'all',
    proxy_interfaces: '127.0.0.42',
  });
});

after(() => bed?.close());

const dsnFor = (queueId: string) => waitFor(() => dsnIn(p, queueId), { what: `the DSN for ${queueId}` });
const send = (to: string, subject: string) => sendFromAlice(p, to, subject);

describe('mail that would come back to us', () => {
  test('an MX at one of our interface addresses: bounced 5.4.6 at once, never connected', async () => {
    const env = await send('bob@selfmx.test', 'self-mx');
    const dsn = await dsnFor(env.queueId);
    assert.match(dsn, /Final-Recipient: rfc822; bob@selfmx\.test\r\n/);
    assert.match(dsn, /Action: failed\r\nStatus: 5\.4\.6\r\n/);
    assert.match(dsn, /Diagnostic-Code: x-mailyard; mail for selfmx\.test loops back to myself\r\n/);
    assert.equal(self.sessions, 0, 'no connection to ourselves');
  });

  test('an MX at a proxy_interfaces address is ourselves too', async () => {
    const env = await send('carol@nat.test', 'nat-mx');
    const dsn = await dsnFor(env.queueId);
    assert.match(dsn, /Status: 5\.4\.6\r\n/);
    assert.match(dsn, /mail for nat\.test loops back to myself/);
    assert.equal(nat.sessions, 0, 'no connection to ourselves');
  });

  test('as a backup MX we hand the mail to the better MX, never to ourselves', async () => {
    await send('dave@backup.test', 'backup-mx');
    const got = await waitFor(
      () => primary.received.find((m) => m.data.toString().includes('Subject: backup-mx\r\n')),
      { what: 'delivery at the primary MX' },
    );
    assert.deepEqual(got.to, ['dave@backup.test']);
    assert.equal(self.sessions, 0);
  });

  test('as a backup MX with no better MX to reach: deferred 4.4.4, not bounced', async () => {
    const env = await send('erin@orphan.test', 'orphan-mx');
    const entry = await waitFor(() => entryOf(new DeferredIndex(p.redis.redis), env.queueId), {
      what: 'the deferral',
    });
    assert.match(entry.lastError ?? '', /unable to find primary relay for orphan\.test/);
    assert.equal(self.sessions, 0);
  });

  test('an MX that answers EHLO with our hostname: bounced 5.4.6, nothing sent to it', async () => {
    const env = await send('frank@mirror.test', 'mirror-mx');
    const dsn = await dsnFor(env.queueId);
    assert.match(dsn, /Action: failed\r\nStatus: 5\.4\.6\r\n/);
    assert.match(dsn, /Diagnostic-Code: x-mailyard; mail for mirror\.test loops back to myself\r\n/);
    assert.ok(mirror.sessions >= 1, 'the server was asked');
    assert.equal(mirror.received.length, 0, 'no message went to it');
  });

  test('the same server as a backup MX: deferred 4.4.6 while the primary is down', async () => {
    const env = await send('gina@mirror-backup.test', 'mirror-backup');
    const entry = await waitFor(() => entryOf(new DeferredIndex(p.redis.redis), env.queueId), {
      what: 'the deferral',
    });
    assert.match(entry.lastError ?? '', /mail for mirror-backup\.test loops back to myself/);
    assert.ok(closing.sessions >= 1, 'the primary was tried first');
    assert.equal(mirror.received.length, 0);
  });
});
