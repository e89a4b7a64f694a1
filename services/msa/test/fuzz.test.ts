// The SMTP fuzz run (test/smtp-fuzz.ts) against submission on 465 (implicit TLS): half the
// runs log in first, so the checks of the sender, the recipients and the message are reached.
import { after, before } from 'node:test';
import { addAccount } from '../../../test/harness.js';
import { smtpFuzz } from '../../../test/smtp-fuzz.js';
import { PASSWORD, startMsaTestbed, type MsaTestbed } from './msa-harness.js';

let t: MsaTestbed;
const LIMIT = 64 * 1024;

before(async () => {
  t = await startMsaTestbed({
    platform: { zone: { 'remote.test': { MX: [{ priority: 10, exchange: 'mx.remote.test' }] } } },
    msa: { message_size_limit: LIMIT, smtpd_hard_error_limit: 30, smtpd_recipient_limit: 5 },
  });
  await addAccount(t.p.directory, 'alice@example.test');
});
after(() => t.close());

smtpFuzz({
  name: 'msa, port 465',
  port: () => t.msa.ports.submissions,
  tls: true,
  login: { user: 'alice@example.test', password: PASSWORD },
  local: ['alice@example.test', 'ghost@example.test'],
  messageSizeLimit: LIMIT,
  runs: { commands: 500, bytes: 300 },
});
