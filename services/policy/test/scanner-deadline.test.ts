import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { PolicyRpc } from '@mailyard/contracts';
import { PolicyRules } from '@mailyard/policy-rules';
import { RawSmtp, waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';

// mta-inbound asks clamd and rspamd itself at DATA. A scanner that accepts the request
// and never answers must not outlive the session's wait: at POLICY_DATA_TIMEOUT the
// client gets the default action, and the request to the scanner ends there (its
// connection closed, its slot freed), not at CONTENT_FILTER_TIMEOUT, so a slow scanner
// does not pile up requests and the messages they hold.

const DATA_TIMEOUT_MS = 1000;

/** A scanner that accepts connections, reads what comes, and never answers. */
interface Stalled {
  port: number;
  accepted: number;
  /** Connections it still has open. */
  open: number;
  server: Server;
}

async function stalledScanner(): Promise<Stalled> {
  const sockets = new Set<Socket>();
  const s: Stalled = {
    port: 0,
    accepted: 0,
    get open() {
      return sockets.size;
    },
    server: createServer((sock) => {
      s.accepted++;
      sockets.add(sock);
      sock.resume();
      sock.on('error', () => undefined);
      sock.on('close', () => sockets.delete(sock));
    }),
  };
  await new Promise<void>((r) => s.server.listen(0, '127.0.0.1', r));
  s.port = (s.server.address() as { port: number }).port;
  const close = s.server.close.bind(s.server);
  s.server.close = (cb) => {
    for (const sock of sockets) sock.destroy();
    return close(cb);
  };
  return s;
}

let p: Platform;
let clamd: Stalled;
let rspamd: Stalled;
let rules: PolicyRules;

before(async () => {
  clamd = await stalledScanner();
  rspamd = await stalledScanner();
  p = await startPlatform({
    inbound: {
      mynetworks: '127.0.0.1/32',
      policy_timeout: '20s',
      policy_data_timeout: `${DATA_TIMEOUT_MS}ms`,
    },
    policy: {
      mynetworks: '127.0.0.1/32',
      clamd_url: `tcp://127.0.0.1:${clamd.port}`,
      rspamd_url: `http://127.0.0.1:${rspamd.port}`,
      // far beyond the session's wait: only the session's deadline can end the requests
      content_filter_timeout: '120s',
    },
    zone: {
      '5.0.0.127.in-addr.arpa': { PTR: ['client.example.net'] },
      'client.example.net': { A: ['127.0.0.5'] },
      'sender.test': { MX: [{ priority: 10, exchange: 'mx.sender.test' }] },
    },
  });
  await addAccount(p.directory, 'alice@example.test');
  rules = new PolicyRules(p.redis.redis, p.redis.prefix);
});
after(async () => {
  await p?.close();
  clamd?.server.close();
  rspamd?.server.close();
});

/** Sets DATA's list and waits until mta-inbound decides with it. */
async function dataChecks(entries: string[]): Promise<void> {
  await rules.set('smtpd_data_restrictions', entries);
  const v = Number(await p.redis.redis.get('policy:version'));
  await waitFor(
    async () => {
      const m = await p.inboundRt.registry
        .getSingleMetric('mailyard_mta_inbound_local_policy_rules_version')
        ?.get();
      return (m?.values[0]?.value ?? -1) >= v;
    },
    { what: 'the rules in force in mta-inbound' },
  );
}

/** One message; the reply to its end of data and how long it took. */
async function send(): Promise<{ code: number; text: string; ms: number }> {
  const c = await RawSmtp.connect(p.inbound.port, '127.0.0.1', { localAddress: '127.0.0.5' });
  try {
    assert.equal((await c.read()).code, 220);
    for (const line of [
      'EHLO client.example.net',
      'MAIL FROM:<someone@sender.test>',
      'RCPT TO:<alice@example.test>',
    ])
      assert.equal((await c.cmd(line)).code, 250, line);
    assert.equal((await c.cmd('DATA')).code, 354);
    const started = Date.now();
    c.write('From: <someone@sender.test>\r\nTo: <alice@example.test>\r\nSubject: hi\r\n\r\nhello\r\n.\r\n');
    const r = await c.read(30_000);
    return { code: r.code, text: r.text, ms: Date.now() - started };
  } finally {
    c.close();
  }
}

describe('a scanner that never answers, asked by mta-inbound at DATA', { timeout: 120_000 }, () => {
  for (const [check, scanner] of [
    ['check_virus', () => clamd],
    ['check_spam', () => rspamd],
  ] as const) {
    test(`${check}: the client is answered at POLICY_DATA_TIMEOUT and the request ends with it`, async () => {
      await dataChecks([check]);
      const s = scanner();
      const before = s.accepted;
      for (let i = 0; i < 2; i++) {
        const r = await send();
        // what the client gets when the policy service does not answer in time
        assert.match(r.text, /^451 4\.3\.5 Server configuration problem/);
        assert.ok(r.ms < DATA_TIMEOUT_MS + 3000, `answered after ${r.ms} ms`);
        assert.ok(s.accepted > before, 'the scanner was asked from the intake');
        // long before CONTENT_FILTER_TIMEOUT: the scanner is not left holding the request
        await waitFor(() => s.open === 0, {
          timeoutMs: 5000,
          what: `the connection to the stalled scanner closed (${s.open} open)`,
        });
      }
    });
  }
});

describe('a scanner that never answers, asked by the policy service over RPC', { timeout: 120_000 }, () => {
  // an intake that cannot reach the scanner itself leaves DATA to the policy service:
  // once the intake has stopped waiting for the answer, the scan is for nobody
  for (const [check, scanner] of [
    ['check_virus', () => clamd],
    ['check_spam', () => rspamd],
  ] as const) {
    test(`${check}: the request to the scanner ends when the requester stops waiting`, async () => {
      await rules.set('smtpd_data_restrictions', [check]);
      const v = Number(await p.redis.redis.get('policy:version'));
      await waitFor(() => p.policy!.rulesVersion >= v, { what: 'the rules in force in the policy service' });
      const s = scanner();
      const before = s.accepted;
      const started = Date.now();
      await assert.rejects(
        p.inboundRt.bus.call(
          PolicyRpc,
          {
            v: 1,
            stage: 'data',
            origin: 'mta-inbound',
            sessionId: `rpc-${check}`,
            queueId: `rpc-${check}`,
            client: { ip: '127.0.0.5' },
            sender: 'someone@sender.test',
            recipients: ['alice@example.test'],
          },
          { timeoutMs: DATA_TIMEOUT_MS, body: Buffer.from('Subject: hi\r\n\r\nhello\r\n') },
        ),
        /no answer/,
      );
      await waitFor(() => s.accepted > before, {
        timeoutMs: 10_000,
        what: 'the scanner asked by the service',
      });
      // long before CONTENT_FILTER_TIMEOUT (120 s): the service did not hold the request
      await waitFor(() => s.open === 0, {
        timeoutMs: 10_000,
        what: `the connection to the stalled scanner closed (${s.open} open)`,
      });
      assert.ok(Date.now() - started < 15_000);
    });
  }
});
