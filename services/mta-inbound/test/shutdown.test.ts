// A stop while a message waits for the broker's confirm and the broker has stopped
// answering: the stop keeps to SHUTDOWN_GRACE, and the client is told to send the message
// again (421), never 250 for a message the broker did not confirm.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import nodemailer from 'nodemailer';
import { startPrivateRabbit, type PrivateRabbit } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';

const GRACE_MS = 2000;
/** Beyond the grace: a busy machine, never a publish timeout (15 s). */
const MARGIN_MS = 8000;

let rabbit: PrivateRabbit;
let p: Platform;

before(async () => {
  rabbit = await startPrivateRabbit();
  p = await startPlatform({
    withDelivery: false,
    amqpUrl: () => rabbit.url,
    inbound: { shutdown_grace: `${GRACE_MS}ms` },
  });
  await addAccount(p.directory, 'ida@example.test');
});

after(async () => {
  rabbit?.resume();
  await p?.close();
  await rabbit?.close();
});

test(
  'a broker that stops answering during a publish: stopped within SHUTDOWN_GRACE, the client told 421',
  { timeout: 120_000 },
  async () => {
    const bus = p.inboundRt.bus;
    const publish = bus.publishMailRouted.bind(bus);
    let publishing!: () => void;
    const published = new Promise<void>((resolve) => (publishing = resolve));
    bus.publishMailRouted = (...args) => {
      publishing();
      return publish(...args);
    };
    // the node holds its connections and confirms nothing
    rabbit.pause();
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: p.inbound.port,
      secure: false,
      ignoreTLS: true,
    });
    const sent = transport
      .sendMail({
        envelope: { from: 'x@remote.test', to: ['ida@example.test'] },
        raw: 'From: x@remote.test\r\nTo: ida@example.test\r\nSubject: during the stop\r\n\r\nhi\r\n',
      })
      .then(
        (info) => ({ ok: true as const, response: info.response }),
        (err: { responseCode?: number; response?: string }) => ({ ok: false as const, ...err }),
      );
    await published;

    const started = performance.now();
    await p.inbound.stop();
    const took = performance.now() - started;

    assert.ok(
      took < GRACE_MS + MARGIN_MS,
      `stop() took ${Math.round(took)} ms, SHUTDOWN_GRACE is ${GRACE_MS} ms`,
    );
    const outcome = await sent;
    assert.equal(outcome.ok, false, `the client got ${outcome.response}`);
    assert.equal(outcome.ok === false && outcome.responseCode, 421);
    assert.match(outcome.response ?? '', /^421 4\.3\.2 /);
  },
);
