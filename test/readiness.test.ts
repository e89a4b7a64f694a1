// /readyz says what a service really needs: for mta-inbound and msa with POLICY_ENABLED,
// a policy service consuming its queue (without one, every SMTP session would wait for
// the policy timeout and be refused), so that an orchestrator routes no client there.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { waitFor } from '@mailyard/testkit';
import { freePort, startProcessTestbed, type ProcessTestbed } from './processes.js';

let bed: ProcessTestbed;

before(async () => {
  bed = await startProcessTestbed('ready.test', [], { POLICY_ENABLED: 'yes' });
});
after(() => bed.close());

describe('/readyz with POLICY_ENABLED', () => {
  test(
    'mta-inbound and msa are not ready while nothing consumes the policy queue',
    { timeout: 90_000 },
    async () => {
      const inbound = await bed.start(
        'mta-inbound',
        { SMTP_PORT: String(await freePort()) },
        { ready: false },
      );
      const msa = await bed.start(
        'msa',
        { SUBMISSION_PORT: String(await freePort()), SUBMISSIONS_PORT: String(await freePort()) },
        { ready: false },
      );
      for (const svc of [inbound, msa]) {
        // started and connected, and still not ready: only the policy service is missing
        const r = await waitFor(
          async () => {
            const res = await svc.readyz();
            return res.body.failing?.length === 1 ? res : null;
          },
          { what: 'only policy-service failing' },
        );
        assert.deepEqual(r, { status: 503, body: { status: 'not ready', failing: ['policy-service'] } });
      }

      const policy = await bed.start('policy', { POLICY_DELEGATION_ENABLED: 'no' });
      for (const svc of [inbound, msa])
        await waitFor(async () => (await svc.readyz()).status === 200, {
          what: 'ready with a policy consumer',
        });

      await policy.stop();
      for (const svc of [inbound, msa])
        await waitFor(async () => (await svc.readyz()).body.failing?.includes('policy-service'), {
          what: 'not ready again once the policy service is gone',
        });
    },
  );
});
