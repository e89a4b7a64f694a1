import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DeferredIndex } from '@mailyard/queue-admin';
import { waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import {
  dsnIn,
  entryOf,
  envelope,
  freePort,
  queueOutbound,
  sendFromAlice,
  simpleMessage,
  startRelay,
  startRemoteMta,
  startScriptedMta,
  type RelayHandle,
  type RemoteMta,
  type ScriptedMta,
} from './helpers.js';

// What a refused greeting, EHLO or HELO means (RFC 5321 §3.1, §3.2, §4.1.4; Postfix
// smtp_helo()): EHLO refused → HELO; HELO refused with 5xx → bounce; a 5xx greeting →
// the next MX (smtp_skip_5xx_greeting), deferred when none is left.
// 127.0.0.51: refuses EHLO, takes HELO. 127.0.0.52: refuses EHLO and HELO with 550.
// 127.0.0.53: 554 greeting. 127.0.0.54: 421 to EHLO. 127.0.0.55: a server that takes mail.
// 127.0.0.56 and .57: PIPELINING, then 421 to the second RCPT, or to MAIL, and close.
let p: Platform;
let relay: RelayHandle;
let port: number;
let oldStyle: ScriptedMta;
let refusing: ScriptedMta;
let closing: ScriptedMta;
let rcptClosing: ScriptedMta;
let mailClosing: ScriptedMta;
let unwelcoming: RemoteMta;
let backup: RemoteMta;

before(async () => {
  port = await freePort();
  p = await startPlatform({
    zone: {
      'oldstyle.test': { MX: [{ priority: 10, exchange: 'mx.oldstyle.test' }] },
      'mx.oldstyle.test': { A: ['127.0.0.51'] },
      'refusing.test': { MX: [{ priority: 10, exchange: 'mx.refusing.test' }] },
      'mx.refusing.test': { A: ['127.0.0.52'] },
      'unwelcoming.test': {
        MX: [
          { priority: 10, exchange: 'mx.unwelcoming.test' },
          { priority: 20, exchange: 'mx.backup.test' },
        ],
      },
      'only-unwelcoming.test': { MX: [{ priority: 10, exchange: 'mx.unwelcoming.test' }] },
      'mx.unwelcoming.test': { A: ['127.0.0.53'] },
      'closing.test': {
        MX: [
          { priority: 10, exchange: 'mx.closing.test' },
          { priority: 20, exchange: 'mx.backup.test' },
        ],
      },
      'mx.closing.test': { A: ['127.0.0.54'] },
      'rcpt-closing.test': { MX: [{ priority: 10, exchange: 'mx.rcpt-closing.test' }] },
      'mx.rcpt-closing.test': { A: ['127.0.0.56'] },
      'mail-closing.test': { MX: [{ priority: 10, exchange: 'mx.mail-closing.test' }] },
      'mx.mail-closing.test': { A: ['127.0.0.57'] },
      'mx.backup.test': { A: ['127.0.0.55'] },
    },
  });
  await addAccount(p.directory, 'alice@example.test');
  oldStyle = await startScriptedMta('127.0.0.51', port, {
    greeting: '220 mx.oldstyle.test SMTP',
    ehlo: '502 5.5.2 Error: command not recognized',
  });
  refusing = await startScriptedMta('127.0.0.52', port, {
    ehlo: '550 5.7.1 No EHLO from you',
    helo: '550 5.7.1 Your network is not welcome here',
  });
  closing = await startScriptedMta('127.0.0.54', port, { ehlo: '421 4.3.2 Service shutting down' });
  rcptClosing = await startScriptedMta('127.0.0.56', port, {
    ehlo: '250-mx.rcpt-closing.test\r\n250 PIPELINING',
    rcpt: (a) => (a.startsWith('second@') ? '421 4.7.0 Too many errors, closing connection' : undefined),
  });
  mailClosing = await startScriptedMta('127.0.0.57', port, {
    ehlo: '250-mx.mail-closing.test\r\n250 PIPELINING',
    mail: '421 4.3.2 Shutting down for maintenance',
  });
  unwelcoming = await startRemoteMta('127.0.0.53', port, {
    greeting: { code: 554, message: '5.7.1 No SMTP service here' },
  });
  backup = await startRemoteMta('127.0.0.55', port);
  relay = await startRelay(p, { outbound_port: port, outbound_retry_schedule: '1h', delay_warning_time: 0 });
});

after(async () => {
  await relay?.stop();
  for (const m of [oldStyle, refusing, closing, rcptClosing, mailClosing, unwelcoming, backup])
    await m?.close();
  await p?.close();
});

const send = (to: string, subject: string) => sendFromAlice(p, to, subject);
const dsnFor = (queueId: string) => dsnIn(p, queueId);

const receivedBy = (mta: RemoteMta, subject: string) =>
  mta.received.find((m) => m.data.toString().includes(`Subject: ${subject}\r\n`));

describe('greeting, EHLO and HELO refused', () => {
  test('EHLO refused: the message goes over HELO', async () => {
    await send('bob@oldstyle.test', 'over-helo');
    await waitFor(() => oldStyle.received.find((m) => m.toString().includes('Subject: over-helo\r\n')), {
      what: 'delivery after HELO',
    });
    assert.deepEqual(
      oldStyle.commands.slice(0, 2).map((c) => c.split(' ')[0]),
      ['EHLO', 'HELO'],
    );
  });

  test('EHLO and HELO refused with 550: bounced at once with the remote reply', async () => {
    const env = await send('carol@refusing.test', 'helo-refused');
    const dsn = await waitFor(() => dsnFor(env.queueId), { what: 'the DSN' });
    assert.match(dsn, /Final-Recipient: rfc822; carol@refusing\.test\r\n/);
    assert.match(dsn, /Action: failed\r\nStatus: 5\.7\.1\r\n/);
    assert.match(dsn, /Remote-MTA: dns; mx\.refusing\.test\r\n/);
    assert.match(
      dsn,
      /Diagnostic-Code: smtp; host mx\.refusing\.test\[127\.0\.0\.52\] refused to talk to me: 550 5\.7\.1 Your network is not welcome here \(in reply to HELO command\)\r\n/,
    );
    assert.equal(await entryOf(new DeferredIndex(p.redis.redis), env.queueId), null, 'not deferred');
    assert.deepEqual(
      refusing.commands.map((c) => c.split(' ')[0]).filter((v) => v !== 'QUIT'),
      ['EHLO', 'HELO'],
      'no mail transaction after the refusal',
    );
  });

  test('421 to EHLO: no HELO, the next MX takes the message', async () => {
    await send('dave@closing.test', 'ehlo-421');
    await waitFor(() => receivedBy(backup, 'ehlo-421'), { what: 'delivery at the backup MX' });
    assert.ok(!closing.commands.some((c) => c.startsWith('HELO')), 'a closing server is not asked again');
  });

  test('554 greeting: the next MX takes the message (smtp_skip_5xx_greeting)', async () => {
    await send('erin@unwelcoming.test', 'greeting-554');
    await waitFor(() => receivedBy(backup, 'greeting-554'), { what: 'delivery at the backup MX' });
    assert.ok(unwelcoming.sessions >= 1, 'the first MX was tried');
  });

  test('554 greeting and no other MX: deferred, not bounced', async () => {
    const env = await send('frank@only-unwelcoming.test', 'greeting-554-only');
    const entry = await waitFor(() => entryOf(new DeferredIndex(p.redis.redis), env.queueId), {
      what: 'the deferral',
    });
    assert.match(entry.lastError ?? '', /refused to talk to me: 554 5\.7\.1 No SMTP service here/);
    assert.equal(dsnFor(env.queueId), undefined);
  });
});

describe('a 421 in the middle of a pipelined transaction', () => {
  /** A message to `to` deferred by a server that closed the session; its index entry. */
  const deferredBy421 = async (to: string[], subject: string) => {
    const env = envelope('alice@example.test', to);
    await queueOutbound(p, env, simpleMessage(env.mailFrom, to[0]!, subject));
    return waitFor(() => entryOf(new DeferredIndex(p.redis.redis), env.queueId), { what: 'the deferral' });
  };

  test("421 to a RCPT: the recipients are deferred with the server's reply", async () => {
    const entry = await deferredBy421(['first@rcpt-closing.test', 'second@rcpt-closing.test'], 'rcpt-421');
    assert.deepEqual(entry.recipients, ['first@rcpt-closing.test', 'second@rcpt-closing.test']);
    // the first recipient, taken before the 421, is deferred for it too: it leads lastError
    assert.match(
      entry.lastError ?? '',
      /^host mx\.rcpt-closing\.test\[127\.0\.0\.56\] said: 421 4\.7\.0 Too many errors, closing connection \(in reply to RCPT TO command\)$/,
    );
    assert.deepEqual(
      rcptClosing.commands.map((c) => c.split(':')[0]),
      ['EHLO mx.mailyard.test', 'MAIL FROM', 'RCPT TO', 'RCPT TO'],
    );
  });

  test("421 to MAIL FROM: the recipients are deferred with the server's reply", async () => {
    const entry = await deferredBy421(['someone@mail-closing.test'], 'mail-421');
    assert.match(
      entry.lastError ?? '',
      /^host mx\.mail-closing\.test\[127\.0\.0\.57\] said: 421 4\.3\.2 Shutting down for maintenance \(in reply to MAIL FROM command\)$/,
    );
  });
});
