import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DeferredIndex } from '@mailyard/queue-admin';
import { waitFor } from '@mailyard/testkit';
import type { Platform } from '../../../test/harness.js';
import {
  dsnIn,
  entryOf,
  envelope,
  queueOutbound,
  relayTestbed,
  simpleMessage,
  type RelayHandle,
  type RelayTestbed,
  type RemoteMta,
} from './helpers.js';

// A temporary refusal from an MX host that is not the last one sends the recipients it
// concerns on to the next host in the same attempt (Postfix smtp_trouble.c: a soft error
// at a non-final server "qualifies for trying the request with other mail servers").
// backup.test: mx1 127.0.0.20 (pref 10), mx2 127.0.0.21 (pref 20).
// three.test: the same two and mx3 127.0.0.22 (pref 30).
// Retries wait an hour: whatever arrives during a test came in its first attempt.
let bed: RelayTestbed;
let p: Platform;
let relay: RelayHandle;
let primary: RemoteMta;
let backup: RemoteMta;
let third: RemoteMta;
let index: DeferredIndex;

before(async () => {
  bed = await relayTestbed(
    {
      zone: {
        'backup.test': {
          MX: [
            { priority: 10, exchange: 'mx1.backup.test' },
            { priority: 20, exchange: 'mx2.backup.test' },
          ],
        },
        'three.test': {
          MX: [
            { priority: 10, exchange: 'mx1.backup.test' },
            { priority: 20, exchange: 'mx2.backup.test' },
            { priority: 30, exchange: 'mx3.backup.test' },
          ],
        },
        'mx1.backup.test': { A: ['127.0.0.20'] },
        'mx2.backup.test': { A: ['127.0.0.21'] },
        'mx3.backup.test': { A: ['127.0.0.22'] },
      },
    },
    ['alice@example.test'],
  );
  p = bed.p;
  primary = await bed.remote('127.0.0.20');
  backup = await bed.remote('127.0.0.21');
  third = await bed.remote('127.0.0.22');
  index = new DeferredIndex(p.redis.redis);
  relay = await bed.relay({
    outbound_retry_schedule: '1h',
    delay_warning_time: 0,
    // two recipients per transaction: a message of three takes two on one session
    smtp_destination_recipient_limit: 2,
  });
});

after(() => bed?.close());

const copies = (mta: RemoteMta, subject: string) =>
  mta.received.filter((m) => m.data.toString().includes(`Subject: ${subject}\r\n`)).map((m) => m.to);

/** Recipient outcomes of the relay's attempts so far, by result, over every domain. */
async function outcomes(): Promise<Record<'delivered' | 'deferred' | 'bounced', number>> {
  const m = await relay.rt.registry.getSingleMetric('mailyard_outbound_relay_attempts_total')?.get();
  const sums = { delivered: 0, deferred: 0, bounced: 0 };
  for (const v of m?.values ?? []) sums[v.labels.result as keyof typeof sums] += v.value;
  return sums;
}

async function send(to: string[], subject: string) {
  const before = await outcomes();
  const env = envelope('alice@example.test', to);
  await queueOutbound(p, env, simpleMessage('alice@example.test', to[0]!, subject));
  return { ...env, before };
}

/**
 * Once the attempt has an outcome for every recipient of the message (they are counted
 * together, before a retry is queued): none was deferred, so nothing waits for a retry.
 */
async function noneDeferred(sent: Awaited<ReturnType<typeof send>>): Promise<void> {
  const total = (o: Record<string, number>) => o.delivered! + o.deferred! + o.bounced!;
  const now = await waitFor(
    async () => {
      const o = await outcomes();
      return total(o) - total(sent.before) >= sent.recipients.length ? o : null;
    },
    { what: 'an outcome for every recipient' },
  );
  assert.equal(now.deferred, sent.before.deferred, 'nothing waits for a retry');
  assert.equal(await entryOf(index, sent.queueId), null);
}

/** The message's entry in the deferred index, once it waits for its next attempt. */
const deferredEntry = (queueId: string) => waitFor(() => entryOf(index, queueId), { what: 'the deferral' });

describe('a temporary refusal at an MX host that is not the last', () => {
  test('451 to one RCPT: that recipient goes to the backup MX at once', { timeout: 30_000 }, async () => {
    primary.behaviour.rcpt = (a) =>
      a === 'grey1@backup.test' ? { code: 451, message: '4.7.1 Greylisted, try again later' } : undefined;
    try {
      const env = await send(['ok1@backup.test', 'grey1@backup.test'], 'rcpt-451');
      await waitFor(() => copies(backup, 'rcpt-451').length === 1, { what: 'the greylisted one at mx2' });
      assert.deepEqual(copies(primary, 'rcpt-451'), [['ok1@backup.test']]);
      assert.deepEqual(copies(backup, 'rcpt-451'), [['grey1@backup.test']]);
      assert.equal(primary.rcptAttempts.get('grey1@backup.test'), 1);
      assert.equal(
        backup.rcptAttempts.get('ok1@backup.test'),
        undefined,
        'the delivered one is not sent again',
      );
      await noneDeferred(env);
      assert.equal(dsnIn(p, env.queueId), undefined);
    } finally {
      delete primary.behaviour.rcpt;
    }
  });

  test('451 to MAIL FROM: the whole message goes to the backup MX', { timeout: 30_000 }, async () => {
    primary.behaviour.mail = () => ({ code: 451, message: '4.3.2 Too many messages, slow down' });
    try {
      const env = await send(['m1@backup.test', 'm2@backup.test'], 'mail-451');
      await waitFor(() => copies(backup, 'mail-451').length === 1, { what: 'delivery at mx2' });
      assert.deepEqual(copies(backup, 'mail-451'), [['m1@backup.test', 'm2@backup.test']]);
      assert.deepEqual(copies(primary, 'mail-451'), []);
      await noneDeferred(env);
    } finally {
      delete primary.behaviour.mail;
    }
  });

  test('452 after the data: the message goes to the backup MX, once', { timeout: 30_000 }, async () => {
    primary.behaviour.data = (m) =>
      m.data.toString().includes('Subject: data-452\r\n')
        ? { code: 452, message: '4.3.1 Insufficient system storage' }
        : undefined;
    try {
      const env = await send(['d1@backup.test'], 'data-452');
      await waitFor(() => copies(backup, 'data-452').length === 1, { what: 'delivery at mx2' });
      assert.deepEqual(copies(backup, 'data-452'), [['d1@backup.test']]);
      assert.deepEqual(copies(primary, 'data-452'), [], 'the primary kept nothing');
      await noneDeferred(env);
    } finally {
      delete primary.behaviour.data;
    }
  });

  test(
    'a 421 before the second transaction: the batch taken stays, the rest goes to the backup MX',
    { timeout: 30_000 },
    async () => {
      let mails = 0;
      primary.behaviour.mail = () =>
        ++mails === 2 ? { code: 421, message: '4.3.2 Service shutting down' } : undefined;
      try {
        const rcpts = ['b1@backup.test', 'b2@backup.test', 'b3@backup.test'];
        const env = await send(rcpts, 'batch-421');
        await waitFor(() => copies(backup, 'batch-421').length === 1, { what: 'the rest at mx2' });
        assert.deepEqual(copies(primary, 'batch-421'), [['b1@backup.test', 'b2@backup.test']]);
        assert.deepEqual(copies(backup, 'batch-421'), [['b3@backup.test']]);
        assert.equal(backup.rcptAttempts.get('b1@backup.test'), undefined);
        await noneDeferred(env);
      } finally {
        delete primary.behaviour.mail;
      }
    },
  );

  test(
    'a 5xx stays final: one DSN lists exactly the recipients refused, at whichever MX',
    { timeout: 30_000 },
    async () => {
      primary.behaviour.rcpt = (a) =>
        a === 'gone5@backup.test'
          ? { code: 550, message: '5.1.1 No such user here' }
          : a === 'grey5@backup.test'
            ? { code: 451, message: '4.7.1 Greylisted' }
            : undefined;
      backup.behaviour.rcpt = (a) =>
        a === 'grey5@backup.test' ? { code: 550, message: '5.1.1 Unknown at the backup' } : undefined;
      try {
        const env = await send(['ok5@backup.test', 'gone5@backup.test', 'grey5@backup.test'], 'mixed-5xx');
        const dsn = await waitFor(() => dsnIn(p, env.queueId), { what: 'the DSN' });
        const failed = [...dsn.matchAll(/Final-Recipient: rfc822; (\S+)\r\nAction: failed/g)].map(
          (m) => m[1],
        );
        assert.deepEqual(failed.sort(), ['gone5@backup.test', 'grey5@backup.test']);
        assert.match(
          dsn,
          /Final-Recipient: rfc822; gone5@backup\.test\r\n(.*\r\n)*?Remote-MTA: dns; mx1\.backup\.test/,
        );
        assert.match(
          dsn,
          /Final-Recipient: rfc822; grey5@backup\.test\r\n(.*\r\n)*?Remote-MTA: dns; mx2\.backup\.test/,
        );
        assert.deepEqual(copies(primary, 'mixed-5xx'), [['ok5@backup.test']]);
        assert.equal(backup.rcptAttempts.get('gone5@backup.test'), undefined, 'a 5xx is not tried elsewhere');
        assert.equal(backup.rcptAttempts.get('ok5@backup.test'), undefined);
        await noneDeferred(env);
      } finally {
        delete primary.behaviour.rcpt;
        delete backup.behaviour.rcpt;
      }
    },
  );
});

describe('the last MX host, and the session limit', () => {
  test('a 4xx at the last MX host defers, with its reply', { timeout: 30_000 }, async () => {
    const greylist = (a: string) =>
      a === 'stuck@backup.test' ? { code: 451, message: '4.7.1 Greylisted, try again later' } : undefined;
    primary.behaviour.rcpt = greylist;
    backup.behaviour.rcpt = (a) =>
      a === 'stuck@backup.test' ? { code: 450, message: '4.2.1 Mailbox busy at the backup' } : undefined;
    try {
      const env = await send(['stuck@backup.test'], 'last-4xx');
      const entry = await deferredEntry(env.queueId);
      assert.match(entry.lastError ?? '', /450 4\.2\.1 Mailbox busy at the backup/);
      assert.equal(primary.rcptAttempts.get('stuck@backup.test'), 1);
      assert.equal(backup.rcptAttempts.get('stuck@backup.test'), 1);
      assert.equal(dsnIn(p, env.queueId), undefined);
    } finally {
      delete primary.behaviour.rcpt;
      delete backup.behaviour.rcpt;
    }
  });

  test(
    'at most two sessions per attempt (smtp_mx_session_limit): the third MX is not tried',
    { timeout: 30_000 },
    async () => {
      const greylist = (a: string) =>
        a === 'thrice@three.test' ? { code: 451, message: '4.7.1 Greylisted' } : undefined;
      primary.behaviour.rcpt = greylist;
      backup.behaviour.rcpt = greylist;
      third.behaviour.rcpt = greylist;
      try {
        const env = await send(['thrice@three.test'], 'session-limit');
        await deferredEntry(env.queueId);
        assert.equal(primary.rcptAttempts.get('thrice@three.test'), 1);
        assert.equal(backup.rcptAttempts.get('thrice@three.test'), 1);
        assert.equal(third.sessions, 0);
      } finally {
        delete primary.behaviour.rcpt;
        delete backup.behaviour.rcpt;
        delete third.behaviour.rcpt;
      }
    },
  );
});
