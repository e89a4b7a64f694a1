// Our verdict headers and results under our authserv-id that a sender wrote are removed
// on port 25 whatever the policy did: not asked at all, or not answering with DUNNO.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import nodemailer from 'nodemailer';
import { waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform, type PlatformOptions } from '../../../test/harness.js';
import { assertNoForgedVerdicts, forgedVerdicts } from '../../../test/forged-verdicts.js';

const setups: [string, PlatformOptions][] = [
  ['with the policy off (POLICY_ENABLED=no)', {}],
  [
    'with a policy service that does not answer and the default action DUNNO',
    {
      inbound: {
        policy_enabled: true,
        smtpd_policy_service_default_action: 'DUNNO',
        policy_timeout: '1s',
        policy_data_timeout: '1s',
      },
    },
  ],
];

for (const [name, opts] of setups) {
  describe(name, () => {
    let p: Platform;
    after(() => p?.close());

    test('a message claiming our verdicts is stored without them', { timeout: 60_000 }, async () => {
      p = await startPlatform(opts);
      await addAccount(p.directory, 'alice@example.test');
      const transport = nodemailer.createTransport({
        host: '127.0.0.1',
        port: p.inbound.port,
        name: 'client.example.net',
        tls: { rejectUnauthorized: false },
      });
      try {
        const info = await transport.sendMail({
          envelope: { from: 'ceo@bank.example', to: ['alice@example.test'] },
          raw: forgedVerdicts('ceo@bank.example', 'alice@example.test', 'your bank', 'mx.mailyard.test'),
        });
        assert.match(info.response, /^250 2\.0\.0 Ok: queued as /);
      } finally {
        transport.close();
      }
      const [file] = await waitFor(
        () => (p.inbox('alice@example.test').length ? p.inbox('alice@example.test') : null),
        { what: "the message in alice's INBOX" },
      );
      assertNoForgedVerdicts(readFileSync(file!, 'utf8'), 'mx.mailyard.test');
    });
  });
}
