// A connection over maxClients is refused without touching the sessions already there:
// a shutdown still says goodbye to each of them at once.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { RawSmtp } from '@mailyard/testkit';
import type { MailyardSmtpServer } from '../src/index.js';
import { startListener } from './helpers.js';

let server: MailyardSmtpServer;
let port: number;
const open: RawSmtp[] = [];

before(async () => {
  ({ server, port } = await startListener({
    hideSTARTTLS: true,
    maxClients: 2,
  }));
});
after(() => {
  for (const c of open) c.close();
});

/** A session past its greeting and EHLO. */
async function greeted(): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  open.push(c);
  assert.equal((await c.read()).code, 220);
  assert.equal((await c.cmd('EHLO client.test')).code, 250);
  return c;
}

test(
  'after a refusal over maxClients, a shutdown tells both idle sessions 421 at once',
  { timeout: 60_000 },
  async () => {
    const first = await greeted();
    const second = await greeted();
    const extra = await RawSmtp.connect(port);
    open.push(extra);
    assert.match((await extra.read()).text, /^421 .*Too many connected clients/);
    await extra.waitClosed();
    // a drain deadline past the test's timeout: a session left open would keep the
    // shutdown from ending before the test fails, whatever the machine's load
    const stopped = server.shutdown(120_000, 120_000);
    for (const c of [first, second]) {
      assert.match((await c.read(20_000)).text, /^421 4\.3\.2 /);
      await c.waitClosed(20_000);
    }
    await stopped;
  },
);
