// A shutdown whose drain time runs out while a message is being published: the client
// gets the message's outcome before the 421, never a 421 for a message that was queued.
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { before, test } from 'node:test';
import { RawSmtp } from '@mailyard/testkit';
import { MailyardSmtpServer } from '../src/index.js';

const DRAIN_MS = 200;
let server: MailyardSmtpServer;
let port: number;
let publishing!: () => void;
const publishStarted = new Promise<void>((resolve) => (publishing = resolve));

before(async () => {
  server = new MailyardSmtpServer({
    proxyTrusted: [],
    hardErrorLimit: 20,
    greetingDelay: 0,
    logger: false,
    authOptional: true,
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
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.server.address() as AddressInfo).port;
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
