// RabbitMQ under a memory alarm, on a node of the test's own. RabbitMQ tells a connection
// of the alarm only once it publishes, and holds that publish unread until the alarm ends:
// the client whose message it was is answered 451 within the confirm timeout, never 250
// and never left waiting; later clients are refused at MAIL FROM; mail is accepted again
// once the alarm ends, and the message told 451 was not lost either.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { RawSmtp, startPrivateRabbit, waitFor, type PrivateRabbit } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';

/** The bus's confirm timeout (15 s), and what a busy machine may add to it. */
const CONFIRM_TIMEOUT_MS = 15_000;
const MARGIN_MS = 5000;

let rabbit: PrivateRabbit;
let p: Platform;

const alarm = (on: boolean) => rabbit.memoryAlarm(on);

before(async () => {
  rabbit = await startPrivateRabbit();
  p = await startPlatform({ amqpUrl: () => rabbit.url });
  await addAccount(p.directory, 'ida@example.test');
});

after(async () => {
  if (rabbit) await alarm(false).catch(() => undefined);
  await p?.close();
  await rabbit?.close();
});

/** One session; the reply to MAIL FROM if it is not 250, else the one at the end of DATA. */
async function send(subject: string): Promise<{ text: string; ms: number }> {
  const c = await RawSmtp.connect(p.inbound.port);
  try {
    await c.read();
    await c.cmd('EHLO client.example.net');
    const mail = await c.cmd('MAIL FROM:<x@remote.test>');
    if (mail.code !== 250) return { text: mail.text, ms: 0 };
    assert.equal((await c.cmd('RCPT TO:<ida@example.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    const started = performance.now();
    c.write(`Subject: ${subject}\r\n\r\nhi\r\n.\r\n`);
    const end = await c.read(CONFIRM_TIMEOUT_MS + MARGIN_MS);
    return { text: end.text, ms: performance.now() - started };
  } finally {
    c.close();
  }
}

const subjects = () =>
  p.inbox('ida@example.test').map((f) => /Subject: ([\w-]+)/.exec(readFileSync(f, 'utf8'))?.[1]);

test(
  'a memory alarm: 451 at the end of DATA within the confirm timeout, 452 at MAIL FROM, then mail again',
  { timeout: 90_000 },
  async () => {
    await alarm(true);
    const first = await send('during-alarm');
    assert.match(first.text, /^451 4\.3\.0 /, 'never 250 for a message the queue did not confirm');
    assert.ok(first.ms < CONFIRM_TIMEOUT_MS + MARGIN_MS, `answered after ${Math.round(first.ms)} ms`);
    assert.ok(p.inboundRt.bus.blocked, 'the alarm known');
    assert.match((await send('refused')).text, /^452 4\.3\.1 /);

    await alarm(false);
    await waitFor(() => p.inboundRt.bus.blocked === null, { timeoutMs: 20_000, what: 'the alarm over' });
    assert.match((await send('after-alarm')).text, /^250 2\.0\.0 /);
    // the message told 451 was queued when the alarm ended: sent again, it arrives twice
    await waitFor(() => subjects().length === 2, { timeoutMs: 20_000, what: 'both filed' });
    assert.deepEqual(subjects().sort(), ['after-alarm', 'during-alarm']);
  },
);
