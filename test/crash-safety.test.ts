import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import nodemailer from 'nodemailer';
import { folderDir } from '@mailyard/mailstore';
import { maildirNew, waitFor } from '@mailyard/testkit';
import { freePort, startProcessTestbed, type ProcessTestbed } from './processes.js';

// Promise 3 of the design: any service may be SIGKILLed at any moment and every
// accepted message still arrives exactly once in each mailbox.
const MESSAGES = 1000;
const ACCOUNTS = ['u0', 'u1', 'u2', 'u3', 'u4'].map((u) => `${u}@crash.test`);

let bed: ProcessTestbed;

before(async () => {
  bed = await startProcessTestbed('crash.test', ACCOUNTS);
});
after(() => bed.close());

test(
  `${MESSAGES} messages, delivery SIGKILLed repeatedly: each arrives exactly once`,
  { timeout: 240_000 },
  async () => {
    const smtpPort = await freePort();
    await bed.start('mta-inbound', { SMTP_PORT: String(smtpPort) });
    let delivery = await bed.start('delivery');

    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: smtpPort,
      pool: true,
      maxConnections: 8,
      maxMessages: Infinity,
      ignoreTLS: true,
    });
    let sent = 0;
    const sending = (async () => {
      const jobs: Promise<unknown>[] = [];
      for (let i = 0; i < MESSAGES; i++) {
        const to = ACCOUNTS[i % ACCOUNTS.length]!;
        jobs.push(
          transport
            .sendMail({
              envelope: { from: 'load@remote.test', to: [to] },
              raw: `From: load@remote.test\r\nTo: ${to}\r\nSubject: crash-${i}\r\n\r\nmessage ${i}\r\n`,
            })
            .then(() => sent++),
        );
      }
      await Promise.all(jobs);
    })();

    // Kill the delivery service five times while mail is flowing.
    let kills = 0;
    while (kills < 5) {
      await waitFor(() => sent >= (kills + 1) * (MESSAGES / 7), {
        timeoutMs: 60_000,
        what: 'progress before the next kill',
      });
      await delivery.kill();
      kills++;
      delivery = await bed.start('delivery');
    }
    await sending;
    transport.close();
    assert.equal(sent, MESSAGES);

    const files = () => ACCOUNTS.flatMap((a) => maildirNew(folderDir(bed.maildir, a, 'INBOX')));
    await waitFor(() => files().length >= MESSAGES, {
      timeoutMs: 120_000,
      what: `all ${MESSAGES} messages filed`,
    });
    // late duplicates would show up now
    await new Promise((r) => setTimeout(r, 1000));
    const all = files();
    const seen = new Map<string, number>();
    for (const f of all) {
      const subject = /Subject: (crash-\d+)/.exec(readFileSync(f, 'utf8'))?.[1] ?? 'missing';
      seen.set(subject, (seen.get(subject) ?? 0) + 1);
    }
    const dupes = [...seen].filter(([, n]) => n > 1);
    assert.deepEqual(dupes, [], 'duplicates');
    assert.equal(seen.size, MESSAGES);
    assert.equal(all.length, MESSAGES);
  },
);
