// The SMTP fuzz run (test/smtp-fuzz.ts) against port 25: the client is in mynetworks, so
// relaying, local delivery and every refusal are reachable.
import { after, before } from 'node:test';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { smtpFuzz } from '../../../test/smtp-fuzz.js';

let p: Platform;
const LIMIT = 64 * 1024;

before(async () => {
  p = await startPlatform({
    inbound: { message_size_limit: LIMIT, smtpd_hard_error_limit: 30, smtpd_recipient_limit: 5 },
  });
  await addAccount(p.directory, 'alice@example.test');
});
after(() => p.close());

smtpFuzz({
  name: 'mta-inbound, port 25',
  port: () => p.inbound.port,
  local: ['alice@example.test', 'ghost@example.test'],
  messageSizeLimit: LIMIT,
  runs: { commands: 1500, bytes: 1000 },
});
