import { after, before, test } from 'node:test';
import { waitFor } from '@mailyard/testkit';
import { assertNothingLost, startLoad } from './fault-load.js';
import { freePort, startProcessTestbed, type ProcessTestbed } from './processes.js';

// Promise 3 of the design, and fault (c): mta-inbound and delivery are SIGKILLed at
// any moment while 1,000 messages arrive; every message that got 250 arrives exactly
// once in its mailbox, and no client gets a 5xx (a lost connection is retried).
const COUNT = 1000;
const RECIPIENTS = ['u0', 'u1', 'u2', 'u3', 'u4'].map((u) => `${u}@crash.test`);
const FROM = 'sender@crash.test';

let bed: ProcessTestbed;

before(async () => {
  bed = await startProcessTestbed('crash.test', [...RECIPIENTS, FROM]);
});
after(() => bed.close());

test(
  `${COUNT} messages, mta-inbound and delivery SIGKILLed repeatedly: each arrives exactly once`,
  { timeout: 240_000 },
  async (t) => {
    const port = await freePort();
    const start = (service: 'mta-inbound' | 'delivery') =>
      bed.start(service, service === 'mta-inbound' ? { SMTP_PORT: String(port) } : {});
    const running = { 'mta-inbound': await start('mta-inbound'), delivery: await start('delivery') };

    const load = startLoad({ port, count: COUNT, from: FROM, recipients: RECIPIENTS, deadlineMs: 180_000 });
    // five kills spread over the load: delivery, mta-inbound, delivery, mta-inbound, delivery
    const order = ['delivery', 'mta-inbound', 'delivery', 'mta-inbound', 'delivery'] as const;
    for (const [k, service] of order.entries()) {
      await waitFor(() => load.count('accepted') >= ((k + 1) * COUNT) / 7, {
        timeoutMs: 90_000,
        what: 'progress before the next kill',
      });
      await running[service].kill();
      running[service] = await start(service);
    }
    await load.done;

    await assertNothingLost(t, 'mta-inbound and delivery killed', load, {
      maildir: bed.maildir,
      recipients: RECIPIENTS,
      from: FROM,
      count: COUNT,
    });
  },
);
