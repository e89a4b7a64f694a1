// A shutdown whose drain time runs out while a message is being published: the client
// gets the message's outcome before the 421, never a 421 for a message that was queued.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { RawSmtp } from '@mailyard/testkit';
import type { MailyardSmtpServer } from '../src/index.js';
import { startListener } from './helpers.js';

const DRAIN_MS = 200;
let server: MailyardSmtpServer;
let port: number;
let publishing!: () => void;
const publishStarted = new Promise<void>((resolve) => (publishing = resolve));

before(async () => {
  ({ server, port } = await startListener({
    hideSTARTTLS: true,
    onData(stream, session, cb) {
      stream.resume();
      stream.on('end', () => {
        // a broker slow to confirm: the publish outlasts the drain time
        const published = server.publishFor(session, async () => {
          publishing();
          await new Promise((resolve) => setTimeout(resolve, DRAIN_MS * 3));
        });
        if (!published) return cb(new Error('session ended'));
        void published.then(() => cb(null, 'queued as Q1'));
      });
    },
  }));
});

test(
  'the drain deadline waits for a publish under way: 250, then 421 4.3.2',
  { timeout: 20_000 },
  async () => {
    const c = await RawSmtp.connect(port);
    assert.equal((await c.read()).code, 220);
    await c.cmd('EHLO client.test');
    assert.equal((await c.cmd('MAIL FROM:<a@client.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<b@here.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    c.write('Subject: t\r\n\r\nhello\r\n.\r\n');
    await publishStarted;
    // the stop's deadline leaves the publish time to be answered
    const stopped = server.shutdown(DRAIN_MS, DRAIN_MS * 10);
    assert.match((await c.read(5000)).text, /^250 .*queued as Q1/);
    assert.match((await c.read(5000)).text, /^421 4\.3\.2 /);
    await c.waitClosed();
    await stopped;
  },
);
