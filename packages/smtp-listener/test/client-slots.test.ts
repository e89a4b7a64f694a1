// A client's connection slot is given back when its session ends, STARTTLS or not:
// STARTTLS drops every listener on the plain socket, the slot's too.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { selfSignedCertificate } from '@mailyard/config';
import { RawSmtp, waitFor } from '@mailyard/testkit';
import type { MailyardSmtpServer } from '../src/index.js';
import { startListener } from './helpers.js';

let server: MailyardSmtpServer;
let port: number;
/** Slots held now, at most 2 (as smtpd_client_connection_count_limit = 2). */
let held = 0;

before(async () => {
  const pair = selfSignedCertificate('mx.test');
  ({ server, port } = await startListener({
    key: pair.key,
    cert: pair.cert,
    clientLimits: {
      admit: async () => {
        if (held >= 2) return { ok: false, limit: 'connection-count' };
        held++;
        return { ok: true, release: () => held-- };
      },
    },
    deadlines: { requestMs: 60_000, minDataRate: 1, loginMs: 0 },
  }));
});
after(() => server.shutdown(1000, 1000));

/** A session that says EHLO, optionally STARTTLS and EHLO again, then QUIT; its greeting. */
async function session(tls: boolean): Promise<string> {
  const c = await RawSmtp.connect(port);
  const greeting = await c.read();
  if (greeting.code === 220) {
    assert.equal((await c.cmd('EHLO client.test')).code, 250);
    if (tls) {
      assert.equal((await c.cmd('STARTTLS')).code, 220);
      await c.startTls();
      assert.equal((await c.cmd('EHLO client.test')).code, 250);
    }
    assert.equal((await c.cmd('QUIT')).code, 221);
  }
  await c.waitClosed();
  // (the close reaches the server a moment later)
  await waitFor(() => held === 0, { what: 'the slot given back' });
  return greeting.text;
}

test(
  'with a limit of 2, sessions one after another after STARTTLS are all greeted',
  { timeout: 30_000 },
  async () => {
    for (const tls of [false, true, true, true, false]) assert.match(await session(tls), /^220 /);
  },
);
