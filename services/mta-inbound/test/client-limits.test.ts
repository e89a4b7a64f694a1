// Per-client connection limits on port 25: one address cannot take every slot.
import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { RawSmtp, waitFor } from '@mailyard/testkit';
import { startPlatform, type Platform } from '../../../test/harness.js';

let p: Platform;
const open: RawSmtp[] = [];

before(async () => {
  p = await startPlatform({
    withDelivery: false,
    // loopback is mynetworks, which the limits spare by default: only 127.0.0.9 is spared here
    inbound: { smtpd_client_event_limit_exceptions: '127.0.0.9/32' },
  });
});
afterEach(() => {
  for (const c of open.splice(0)) c.close();
});
after(() => p?.close());

/** Opens `n` connections from `from` at once and reads each one's first reply. */
async function connections(n: number, from: string): Promise<{ c: RawSmtp; code: number; text: string }[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const c = await RawSmtp.connect(p.inbound.port, '127.0.0.1', { localAddress: from });
      open.push(c);
      const r = await c.read(20_000);
      return { c, code: r.code, text: r.text };
    }),
  );
}

test(
  '60 idle connections from one address: 50 greeted, the rest 421 4.7.0 and closed; another address is still greeted',
  { timeout: 60_000 },
  async () => {
    const replies = await connections(60, '127.0.0.5');
    assert.equal(replies.filter((r) => r.code === 220).length, 50);
    const refused = replies.filter((r) => r.code !== 220);
    assert.equal(refused.length, 10);
    for (const r of refused) assert.equal(r.text, '421 4.7.0 Error: too many connections from 127.0.0.5');
    await Promise.all(refused.map((r) => r.c.waitClosed()));
    // someone else is not kept out
    const [other] = await connections(1, '127.0.0.6');
    assert.equal(other!.code, 220);
    // a slot freed is a slot given back
    replies.find((r) => r.code === 220)!.c.close();
    // (the close reaches the server a moment later)
    await waitFor(
      async () => {
        const [r] = await connections(1, '127.0.0.5');
        return r!.code === 220;
      },
      { what: 'a connection from 127.0.0.5 greeted again' },
    );
  },
);

test('an exception (smtpd_client_event_limit_exceptions) is not limited', { timeout: 60_000 }, async () => {
  const replies = await connections(60, '127.0.0.9');
  assert.equal(replies.filter((r) => r.code === 220).length, 60);
});

test('/metrics counts the refusals', { timeout: 20_000 }, async () => {
  const body = await (await fetch(`http://127.0.0.1:${p.inboundRt.httpPort}/metrics`)).text();
  assert.match(body, /mailyard_mta_inbound_refused_connections_total\{limit="connection-count"\} [1-9]/);
});

/** One session from `from`, past its greeting and EHLO. */
async function greeted(from: string): Promise<RawSmtp> {
  const [first] = await connections(1, from);
  assert.equal((await first!.c.cmd('EHLO client.example.net')).code, 250);
  return first!.c;
}

test(
  'NOOP, RSET, VRFY and HELP past the junk limit count as errors: 421 after the hard error limit',
  { timeout: 60_000 },
  async () => {
    const c = await greeted('127.0.0.7');
    // 100 junk commands (smtpd_junk_command_limit), then 20 more count as the 20 errors
    const junk = ['NOOP', 'RSET', 'VRFY someone', 'HELP'];
    const replies: number[] = [];
    for (let i = 0; i < 130; i++) {
      const r = await c.cmd(junk[i % junk.length]!);
      replies.push(r.code);
      if (r.code === 421) {
        assert.equal(r.text, '421 4.7.0 Error: too many errors, closing connection');
        break;
      }
    }
    assert.equal(replies.length, 120, 'the 120th junk command ends the session');
    assert.ok(replies.slice(0, 119).every((code) => code < 300));
    await c.waitClosed();
  },
);

test(
  'a message accepted forgives the junk commands before it, as in Postfix',
  { timeout: 60_000 },
  async () => {
    const c = await greeted('127.0.0.8');
    const resets = async () => {
      for (let i = 0; i < 110; i++) assert.equal((await c.cmd('RSET')).code, 250);
    };
    // 220 RSETs in all, one message between them: never 100 + 20 in a row
    await resets();
    assert.equal((await c.cmd('MAIL FROM:<a@sender.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<b@elsewhere.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    assert.equal((await c.cmd('Subject: one of many\r\n\r\nhello\r\n.')).code, 250);
    await resets();
    assert.equal((await c.cmd('QUIT')).code, 221);
  },
);
