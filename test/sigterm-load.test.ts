import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { waitFor } from '@mailyard/testkit';
import { assertNothingLost, startLoad } from './fault-load.js';
import { freePort, startProcessTestbed, type ProcessTestbed } from './processes.js';

// A rolling restart under load (docker stop: SIGTERM, then a new process): mta-inbound
// and delivery are stopped in turn while 1,000 messages arrive. Clients in the middle of
// a message get its real answer or a 421 and send it again; every message that got 250
// is filed exactly once.
const COUNT = 1000;
const RECIPIENTS = ['u0', 'u1', 'u2', 'u3', 'u4'].map((u) => `${u}@stop.test`);
const FROM = 'sender@stop.test';

let bed: ProcessTestbed;

before(async () => {
  bed = await startProcessTestbed('stop.test', [...RECIPIENTS, FROM]);
});
after(() => bed.close());

test(
  `${COUNT} messages, mta-inbound and delivery stopped with SIGTERM in turn: each arrives once`,
  { timeout: 240_000 },
  async (t) => {
    const port = await freePort();
    const start = (service: 'mta-inbound' | 'delivery') =>
      bed.start(service, service === 'mta-inbound' ? { SMTP_PORT: String(port) } : {});
    const running = { 'mta-inbound': await start('mta-inbound'), delivery: await start('delivery') };

    const load = startLoad({ port, count: COUNT, from: FROM, recipients: RECIPIENTS, deadlineMs: 180_000 });
    for (const [k, service] of (['mta-inbound', 'delivery', 'mta-inbound', 'delivery'] as const).entries()) {
      // while clients are sending: a stop after the load would show nothing
      await waitFor(() => load.count('accepted') >= ((k + 1) * COUNT) / 6, {
        timeoutMs: 90_000,
        what: 'progress before the next stop',
      });
      const ended = await running[service].terminate();
      assert.equal(ended.code, 0, `${service} exits 0 at SIGTERM`);
      running[service] = await start(service);
    }
    await load.done;

    const tally = await assertNothingLost(t, 'mta-inbound and delivery stopped', load, {
      maildir: bed.maildir,
      recipients: RECIPIENTS,
      from: FROM,
      count: COUNT,
    });
    assert.ok(tally.tempfailed + tally['no-reply'] > 0, 'the stops were felt by the clients');
  },
);
