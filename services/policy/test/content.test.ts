import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { EventKeys } from '@mailyard/contracts';
import { PolicyKeys, PolicyRules } from '@mailyard/policy-rules';
import {
  droppingPort,
  EICAR,
  GTUBE,
  RawSmtp,
  startClamd,
  startRspamd,
  waitFor,
  type Scanner,
} from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';

// Content checks with real clamd and rspamd processes: viruses refused at DATA, spam
// into Junk, newsletters into Promotions, learn events train rspamd.

let p: Platform;
let clamd: Scanner;
let rspamd: Scanner;
/** Sits between the policy service and rspamd's controller and records what was learned. */
let spy: Server;
const learnCalls: { path: string; status: number; body: string }[] = [];
/** Learn requests the spy answers as a busy rspamd does instead of passing them on. */
let learnsLocked = 0;
const clock = { now: Date.parse('2026-01-01T00:00:00Z') };
/** rspamd puts a message with this header into its greylist band (its `greylist` action). */
const GREYLIST_BAND = 'X-Test-Band: greylist';

before(
  async () => {
    // each kept as soon as it runs, so after() stops it even when the other fails to start
    await Promise.all([
      startClamd().then((s) => (clamd = s)),
      startRspamd('127.0.0.1:9', {
        'band.map': '/greylist/\n',
        'multimap.conf':
          'TEST_GREYLIST_BAND { type = "header"; header = "X-Test-Band"; regexp = true; ' +
          'map = "$LOCAL_CONFDIR/local.d/band.map"; score = 0.0; }\n',
        'force_actions.conf':
          'rules { TEST_GREYLIST_BAND { action = "greylist"; expression = "TEST_GREYLIST_BAND"; } }\n',
      }).then((s) => (rspamd = s)),
    ]);
    spy = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.url?.startsWith('/learn') && learnsLocked > 0) {
          learnsLocked--;
          const body = '{"error":"cannot commit checkpoint: database is locked"}';
          learnCalls.push({ path: req.url, status: 500, body });
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(body);
          return;
        }
        void fetch(`${rspamd.controllerUrl}${req.url}`, {
          method: req.method ?? 'POST',
          body: Buffer.concat(chunks),
        }).then(async (r) => {
          const body = await r.text();
          learnCalls.push({ path: req.url ?? '', status: r.status, body });
          res.writeHead(r.status, { 'content-type': 'application/json' });
          res.end(body);
        });
      });
    });
    await new Promise<void>((r) => spy.listen(0, '127.0.0.1', () => r()));
    const spyUrl = `http://127.0.0.1:${(spy.address() as { port: number }).port}`;
    p = await startPlatform({
      inbound: { mynetworks: '127.0.0.1/32', policy_timeout: '20s' },
      policy: {
        mynetworks: '127.0.0.1/32',
        clamd_url: clamd.url,
        rspamd_url: rspamd.url,
        rspamd_controller_url: spyUrl,
        // GTUBE is rspamd's reject action; file it into Junk instead of refusing
        rspamd_reject_action: 'quarantine',
        content_filter_timeout: '20s',
      },
      delivery: { bulk_folder: 'Promotions' },
      policyNow: () => clock.now,
      zone: {
        '5.0.0.127.in-addr.arpa': { PTR: ['client.example.net'] },
        'client.example.net': { A: ['127.0.0.5'] },
        'spf-pass.example': { TXT: ['v=spf1 ip4:127.0.0.5 -all'] },
      },
    });
    await addAccount(p.directory, 'alice@example.test');
    const rules = new PolicyRules(p.redis.redis, p.redis.prefix);
    for (const l of [
      'smtpd_client_restrictions',
      'smtpd_helo_restrictions',
      'smtpd_sender_restrictions',
      'smtpd_recipient_restrictions',
    ])
      await rules.set(l, []);
    await rules.reset('smtpd_data_restrictions');
    const v = Number(await p.redis.redis.get('policy:version'));
    await waitFor(() => p.policy!.rulesVersion >= v);
  },
  { timeout: 300_000 },
);
after(async () => {
  await p?.close();
  spy?.close();
  await clamd?.stop();
  await rspamd?.stop();
});

async function send(message: string, from = 'news@sender.example'): Promise<{ code: number; text: string }> {
  const c = await RawSmtp.connect(p.inbound.port, '127.0.0.1', { localAddress: '127.0.0.5' });
  try {
    await c.read();
    await c.cmd('EHLO client.example.net');
    assert.equal((await c.cmd(`MAIL FROM:<${from}>`)).code, 250);
    assert.equal((await c.cmd('RCPT TO:<alice@example.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    c.write(message.replace(/\r?\n/g, '\r\n') + '\r\n.\r\n');
    return await c.read(60_000);
  } finally {
    c.close();
  }
}

const message = (marker: string, body: string, extra = '') =>
  `From: Sender <news@sender.example>\nTo: Alice <alice@example.test>\nSubject: Meeting notes ${marker}\n` +
  `Date: ${new Date().toUTCString().replace('GMT', '+0000')}\nMessage-ID: <${marker}.${Date.now()}@sender.example>\n` +
  `MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n${extra}\n${body}\n`;

async function delivered(marker: string, folder: string): Promise<string> {
  return waitFor(
    () =>
      p
        .inbox('alice@example.test', folder)
        .map((f) => readFileSync(f, 'latin1'))
        .find((t) => t.includes(marker)),
    { what: `${marker} in ${folder}`, timeoutMs: 20_000 },
  );
}

describe('viruses (clamd)', () => {
  test('EICAR is refused at DATA with 554 5.7.1 naming the signature', async () => {
    const r = await send(message('virus', `Here it is:\n${EICAR}`));
    assert.match(r.text, /^554 5\.7\.1 Message rejected: virus found: Mailyard\.Test\.EICAR/);
  });
});

describe('spam (rspamd)', () => {
  test('an ordinary message goes to INBOX with the spam headers', async () => {
    // headers only the policy writes, forged by the sender: "not scanned", "a newsletter"
    const forged = 'X-Mailyard-Virus-Scan: failed\nX-Mailyard-Spam-Scan: failed\nX-Mailyard-Bulk: yes\n';
    const r = await send(message('ham1', 'Hi Alice,\n\nthe notes from today are below.\n\nRegards', forged));
    assert.equal(r.code, 250, r.text);
    const text = await delivered('ham1', 'INBOX');
    assert.match(text, /^X-Spam-Score: /m);
    assert.match(text, /X-Mailyard-Policy: inbox; check_virus=clean; .*check_spam=/);
    assert.doesNotMatch(text.slice(0, text.indexOf('\r\n\r\n')), /^X-Mailyard-(Virus-Scan|Spam-Scan|Bulk):/m);
  });

  test('GTUBE is classified spam by rspamd and filed into Junk, with its reasons', async () => {
    const r = await send(message('gtube1', `This is spam.\n${GTUBE}`));
    assert.equal(r.code, 250, r.text);
    const text = await delivered('gtube1', 'Junk');
    assert.match(text, /^X-Spam: Yes/m);
    assert.match(text, /X-Mailyard-Policy: junk; .*check_spam=reject \(.*GTUBE/);
  });

  test("the sender's own X-Spam verdict does not reach the mailbox", { timeout: 60_000 }, async () => {
    const forged = 'X-Spam: No\nX-Spam-Score: -20.00 / 15.00\nx-spam:\n No\n';
    const r = await send(message('gtube2', `This is spam.\n${GTUBE}`, forged));
    assert.equal(r.code, 250, r.text);
    const text = await delivered('gtube2', 'Junk');
    const head = text.slice(0, text.indexOf('\r\n\r\n'));
    assert.deepEqual(
      head.match(/^x-spam(-score)?:.*/gim)?.map((h) => h.replace(/:.*/, '')),
      ['X-Spam', 'X-Spam-Score'],
      head,
    );
    assert.match(head, /^X-Spam: Yes\r?$/m);
    assert.doesNotMatch(head, /-20\.00/);
  });
});

describe("rspamd's greylist band", () => {
  test('greylisted at the end of DATA with 451 4.7.1, accepted when retried after the delay', async () => {
    const m = message('band1', 'Hello again', `${GREYLIST_BAND}\n`);
    const first = await send(m);
    assert.match(first.text, /^451 4\.7\.1 Error: greylisted by the spam filter, try again in 300 seconds/);
    clock.now += 301_000;
    const retry = await send(m);
    assert.equal(retry.code, 250, retry.text);
    assert.match(await delivered('band1', 'INBOX'), /X-Mailyard-Policy: inbox; .*greylist=passed/);
  });

  test('a client with FCrDNS whose sender passes SPF is not greylisted', async () => {
    const m = message('band2', 'Hello', `${GREYLIST_BAND}\n`).replace(
      /news@sender\.example/g,
      'news@spf-pass.example',
    );
    const r = await send(m, 'news@spf-pass.example');
    assert.equal(r.code, 250, r.text);
    assert.match(
      await delivered('band2', 'INBOX'),
      /spf=pass; .*greylist=skipped \(rspamd band, FCrDNS and SPF pass\)/,
    );
  });
});

describe('advertising', () => {
  test('a newsletter is filed into Promotions when enabled', async () => {
    const r = await send(
      message(
        'news1',
        'Our autumn offers!',
        'List-Unsubscribe: <mailto:unsub@sender.example>\nPrecedence: bulk\n',
      ),
    );
    assert.equal(r.code, 250, r.text);
    const text = await delivered('news1', 'Promotions');
    assert.match(text, /^X-Mailyard-Bulk: yes/m);
  });
});

/** A counter of mta-inbound's (or a histogram's count), by its labels joined with commas. */
async function inboundCounts(name: string): Promise<Map<string, number>> {
  const m = await p.inboundRt.registry.getSingleMetric(name)?.get();
  return new Map(
    (m?.values ?? [])
      .filter((v) => !(v as { metricName?: string }).metricName?.match(/_(bucket|sum)$/))
      .map((v) => [Object.values(v.labels).join(','), v.value] as const),
  );
}

describe('where the scanners are asked', () => {
  const DECISIONS = 'mailyard_mta_inbound_policy_decisions_total';
  const SCANS = 'mailyard_mta_inbound_local_policy_scanner_seconds';

  test('mta-inbound asks clamd and rspamd itself: a message costs no RPC', async () => {
    const [decisions, scans] = [await inboundCounts(DECISIONS), await inboundCounts(SCANS)];
    const r = await send(message('here1', 'Hello, nothing to see.'));
    assert.equal(r.code, 250, r.text);
    const text = await delivered('here1', 'INBOX');
    assert.match(text, /^X-Spam: No/m);
    assert.match(text, /X-Mailyard-Policy: inbox; .*check_virus=clean.*check_spam=no action/);
    const [after, scansAfter] = [await inboundCounts(DECISIONS), await inboundCounts(SCANS)];
    const grew = (m: Map<string, number>, was: Map<string, number>, key: string) =>
      (m.get(key) ?? 0) - (was.get(key) ?? 0);
    assert.equal(grew(after, decisions, 'data,local'), 1, 'DATA decided in mta-inbound');
    assert.equal(grew(after, decisions, 'data,service'), 0, 'no RPC at DATA');
    // the histogram's count series: one scan by each scanner from mta-inbound
    for (const scanner of ['clamd', 'rspamd']) assert.equal(grew(scansAfter, scans, scanner), 1, scanner);
  });

  /**
   * Runs `body` while mta-inbound reads clamd's address as `clamdUrl` in the service's
   * published settings (as an intake on another host would, where that address is one
   * only the service's host reaches); the service itself scans with its own.
   */
  async function withPublishedClamd(clamdUrl: string, body: () => Promise<void>): Promise<void> {
    const rules = new PolicyRules(p.redis.redis, p.redis.prefix);
    const published = await p.redis.redis.hgetall(PolicyKeys.engineConfig);
    const [instance, settings] = Object.entries(published)[0]!;
    const inForce = async () => {
      await rules.reset('smtpd_data_restrictions');
      const v = Number(await p.redis.redis.get('policy:version'));
      await waitFor(
        async () =>
          ((
            await p.inboundRt.registry
              .getSingleMetric('mailyard_mta_inbound_local_policy_rules_version')
              ?.get()
          )?.values[0]?.value ?? -1) >= v,
        { what: 'the settings reloaded in mta-inbound' },
      );
    };
    const elsewhere = { ...(JSON.parse(settings) as Record<string, string>), clamd_url: clamdUrl };
    await p.redis.redis.hset(PolicyKeys.engineConfig, instance, JSON.stringify(elsewhere));
    try {
      await inForce();
      await body();
    } finally {
      await p.redis.redis.hset(PolicyKeys.engineConfig, instance, settings);
      await inForce();
    }
  }

  /** Sends EICAR: the service refuses it, asked by one RPC at DATA. */
  async function refusedByTheService(marker: string): Promise<void> {
    const decisions = await inboundCounts(DECISIONS);
    const r = await send(message(marker, `Here it is:\n${EICAR}`));
    assert.match(r.text, /^554 5\.7\.1 Message rejected: virus found: Mailyard\.Test\.EICAR/);
    const after = await inboundCounts(DECISIONS);
    const grew = (key: string) => (after.get(key) ?? 0) - (decisions.get(key) ?? 0);
    assert.equal(grew('data,service'), 1, 'asked of the service');
    assert.equal(grew('data,local'), 0, 'not decided here');
  }

  test('a scanner mta-inbound cannot connect to leaves DATA to the service, for a while', async () => {
    // nothing listens there: the connection is refused
    await withPublishedClamd('tcp://127.0.0.1:9', async () => {
      const tried = async () => (await inboundCounts(SCANS)).get('clamd') ?? 0;
      const before = await tried();
      await refusedByTheService('elsewhere1');
      assert.equal(await tried(), before + 1, 'clamd tried from here');
      // the next message is left to the service from the start: no attempt from here
      await refusedByTheService('elsewhere2');
      assert.equal(await tried(), before + 1, 'clamd not tried again');
    });
  });

  test('a scanner that never takes the connection (packets dropped) counts as unreachable', async () => {
    // connection attempts dropped, as a firewall dropping packets would
    const dropping = await droppingPort();
    try {
      await withPublishedClamd(`tcp://127.0.0.1:${dropping.port}`, () => refusedByTheService('dropped1'));
    } finally {
      dropping.close();
    }
  });
});

describe('learning', () => {
  test('a learn.spam event trains rspamd through its controller, again when it was busy', async () => {
    // rspamd's sqlite backend answers 500 "database is locked" while another worker writes
    learnsLocked = 1;
    const raw = message(
      'learn1',
      'Buy cheap watches now, best prices, limited offer, click here today.',
    ).replace(/\n/g, '\r\n');
    await p.inboundRt.bus.publishEvent(EventKeys.learnSpam, {
      v: 1,
      account: 'alice@example.test',
      queueId: null,
      message: Buffer.from(raw).toString('base64'),
    });
    const call = await waitFor(() => learnCalls.find((c) => c.path === '/learnspam' && c.status !== 500), {
      what: 'the policy service to train rspamd',
    });
    assert.equal(learnCalls.filter((c) => c.status === 500).length, 1, 'the busy answer, then the retry');
    // rspamd 3.4 with the sqlite backend sometimes answers a first learn of a message
    // with "already learned"; either way the message is now in the classifier
    assert.ok(call.status === 200 || /already learned/.test(call.body), JSON.stringify(call));
    const again = await fetch(`${rspamd.controllerUrl}/learnspam`, { method: 'POST', body: raw });
    assert.match(await again.text(), /already learned/);
  });
});

describe('scanner failures', () => {
  test('clamd down: tempfail by default, never an accept without a scan', async () => {
    await clamd.stop();
    const r = await send(message('down1', 'hello'));
    assert.match(r.text, /^451 4\.7\.1 Error: content filter temporarily unavailable/);
  });
});
