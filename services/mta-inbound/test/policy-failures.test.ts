// mta-inbound when its policy decisions fail or take long.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RawSmtp } from '@mailyard/testkit';
import { startPlatform, type Platform } from '../../../test/harness.js';
import type { MtaInboundDeps } from '../src/index.js';

type Policy = NonNullable<MtaInboundDeps['policy']>;

describe('a policy that fails at connect', () => {
  let p: Platform;
  before(async () => {
    // what a local decision does when Redis fails: an error, not a verdict
    const failing: Policy = {
      start: () => undefined,
      stop: async () => undefined,
      ask: async () => {
        throw new Error('directory unavailable: Connection is closed.');
      },
    };
    p = await startPlatform({ withDelivery: false, inboundDeps: { policy: failing } });
  });
  after(() => p?.close());

  test(
    'the client is greeted 421 4.3.0, never 451 (RFC 5321 §3.1), and disconnected',
    { timeout: 20_000 },
    async () => {
      const c = await RawSmtp.connect(p.inbound.port);
      assert.equal((await c.read()).text, '421 4.3.0 Error: local error in processing, try again later');
      await c.waitClosed();
    },
  );
});
