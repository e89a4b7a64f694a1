// Our verdict headers and results under our authserv-id that a logged-in user wrote are
// removed on submission whatever the policy did: not asked at all, or not answering with
// DUNNO (a user must not hand a colleague a message that passes for checked by us).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import nodemailer from 'nodemailer';
import { waitFor } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
import { assertNoForgedVerdicts, forgedVerdicts } from '../../../test/forged-verdicts.js';
import type { Msa } from '../src/index.js';
import { PASSWORD, startMsaTestbed, type MsaTestbed } from './msa-harness.js';

// the policy service's AUTHSERV_ID, set on the msa too (its own name is submit.mailyard.test)
const AUTHSERV_ID = 'mx.mailyard.test';

let t: MsaTestbed;
let unanswered: Msa;

before(async () => {
  t = await startMsaTestbed({ msa: { authserv_id: AUTHSERV_ID } });
  // POLICY_ENABLED with no policy service consuming its queue
  unanswered = await t.another({
    policy_enabled: true,
    smtpd_policy_service_default_action: 'DUNNO',
    policy_timeout: '1s',
    policy_data_timeout: '1s',
  });
  await addAccount(t.p.directory, 'erin@example.test');
  await addAccount(t.p.directory, 'carol@example.test');
});
after(() => t?.close());

async function submitAndRead(port: number, subject: string): Promise<string> {
  const transport = nodemailer.createTransport({
    host: '127.0.0.1',
    port,
    requireTLS: true,
    tls: { rejectUnauthorized: false },
    auth: { user: 'erin@example.test', pass: PASSWORD },
  });
  try {
    const info = await transport.sendMail({
      envelope: { from: 'erin@example.test', to: ['carol@example.test'] },
      raw: forgedVerdicts('erin@example.test', 'carol@example.test', subject, AUTHSERV_ID),
    });
    assert.match(info.response, /^250 2\.0\.0 Ok: queued as /);
  } finally {
    transport.close();
  }
  const file = await waitFor(
    () =>
      t.p.inbox('carol@example.test').find((f) => readFileSync(f, 'utf8').includes(`Subject: ${subject}`)) ??
      null,
    { what: "the message in carol's INBOX" },
  );
  return readFileSync(file, 'utf8');
}

test(
  'with the policy off (POLICY_ENABLED=no): stored without our verdicts',
  { timeout: 30_000 },
  async () => {
    assertNoForgedVerdicts(await submitAndRead(t.msa.ports.submission, 'policy off'), AUTHSERV_ID);
  },
);

test(
  'with a policy service that does not answer and the default action DUNNO: stored without our verdicts',
  { timeout: 30_000 },
  async () => {
    assertNoForgedVerdicts(await submitAndRead(unanswered.ports.submission, 'policy silent'), AUTHSERV_ID);
  },
);
