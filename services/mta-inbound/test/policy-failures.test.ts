// mta-inbound when its policy decisions fail or take long.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { POLICY_VERSION, PolicyDecision } from '@mailyard/contracts';
import { RawSmtp, waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
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

describe('a shutdown while the end of DATA is decided', () => {
  let p: Platform;
  let asked!: () => void;
  const dataAsked = new Promise<void>((resolve) => (asked = resolve));
  let decide!: () => void;
  const decided = new Promise<void>((resolve) => (decide = resolve));
  before(async () => {
    // a scan that is still running when the drain time is up
    const slow: Policy = {
      start: () => undefined,
      stop: async () => undefined,
      ask: async (request) => {
        if (request.stage === 'data') {
          asked();
          await decided;
        }
        return PolicyDecision.parse({ v: POLICY_VERSION, action: 'continue', reasons: [] });
      },
    };
    p = await startPlatform({
      withDelivery: false,
      inbound: { shutdown_grace: '1s' },
      inboundDeps: { policy: slow },
    });
    await addAccount(p.directory, 'alice@example.test');
  });
  after(() => p?.close());

  test(
    'the client told 421 4.3.2 has nothing queued: it sends the message again',
    { timeout: 30_000 },
    async () => {
      const queued = async () => (await p.inboundRt.bus.inspectQueue('delivery'))!.messages;
      const before = await queued();
      const c = await RawSmtp.connect(p.inbound.port);
      assert.equal((await c.read()).code, 220);
      await c.cmd('EHLO client.example.net');
      assert.equal((await c.cmd('MAIL FROM:<x@remote.test>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<alice@example.test>')).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      c.write('Subject: during a shutdown\r\n\r\nhello\r\n.\r\n');
      await dataAsked;
      const stopped = p.inbound.stop();
      assert.match((await c.read(10_000)).text, /^421 4\.3\.2 /);
      await stopped;
      decide();
      const metrics = `http://127.0.0.1:${p.inboundRt.httpPort}/metrics`;
      await waitFor(
        async () =>
          /_messages_total\{result="rejected",reason="session_ended"\} 1/.test(
            await (await fetch(metrics)).text(),
          ),
        {
          what: 'the message dropped',
        },
      );
      assert.equal(await queued(), before);
    },
  );
});
