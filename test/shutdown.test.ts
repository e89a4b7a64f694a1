// Promise 9 of the design: every service stops within its grace period, whatever its
// clients are doing, and says so to them. Each service runs its real start command as a
// process; the test connects clients, sends SIGTERM as `docker stop` does, and checks
// what the clients were told and that the process was gone in time.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Bus } from '@mailyard/bus';
import { RoutingKeys } from '@mailyard/contracts';
import { folderDir } from '@mailyard/mailstore';
import { createLogger } from '@mailyard/observability';
import { maildirNew, queueDepth, RawSmtp, startDnsServer, startTcpProxy, waitFor } from '@mailyard/testkit';
import { envelope, simpleMessage } from '../services/outbound-relay/test/helpers.js';
import { RawImap } from '../services/retrieval/test/raw-imap.js';
import { freePort, startProcessTestbed, type ProcessTestbed, type ServiceProcess } from './processes.js';

const GRACE_MS = 3000;
const PASSWORD = 'correct horse battery staple';
/** What a test allows beyond the grace period: the exit itself, on a busy machine. */
const EXIT_SLACK_MS = 5000;

let bed: ProcessTestbed;

before(async () => {
  bed = await startProcessTestbed('shut.test', ['user@shut.test'], { SHUTDOWN_GRACE: `${GRACE_MS}ms` });
});
after(() => bed.close());

/** SIGTERM; the process must exit cleanly (0) within the grace period. */
async function terminateInTime(p: ServiceProcess): Promise<void> {
  const end = await p.terminate();
  assert.deepEqual({ code: end.code, signal: end.signal }, { code: 0, signal: null }, p.output());
  assert.ok(end.ms < GRACE_MS + EXIT_SLACK_MS, `exited ${end.ms} ms after SIGTERM`);
}

async function smtpSession(port: number, tls = false): Promise<RawSmtp> {
  const c = tls ? await RawSmtp.connectTls(port) : await RawSmtp.connect(port);
  assert.equal((await c.read()).code, 220);
  assert.equal((await c.cmd('EHLO client.shut.test')).code, 250);
  return c;
}

const SHUTTING_DOWN = /^421 4\.3\.2 /;

describe('mta-inbound at SIGTERM', () => {
  test(
    'idle client: 421 at once; mid-DATA: 421, not queued; message being queued: its 250, then 421',
    { timeout: 60_000 },
    async (t) => {
      // between the service and RabbitMQ, to hold back the publisher confirm
      const broker = await startTcpProxy({ host: '127.0.0.1', port: 5672 });
      t.after(() => broker.close());
      const amqp = new URL(bed.vhost.url);
      amqp.port = String(broker.port);
      const smtpPort = await freePort();
      const inbound = await bed.start('mta-inbound', {
        SMTP_PORT: String(smtpPort),
        AMQP_URL: amqp.toString(),
      });

      const idle = await smtpSession(smtpPort);
      const transaction = async () => {
        const c = await smtpSession(smtpPort);
        assert.equal((await c.cmd('MAIL FROM:<sender@remote.test>')).code, 250);
        assert.equal((await c.cmd('RCPT TO:<user@shut.test>')).code, 250);
        assert.equal((await c.cmd('DATA')).code, 354);
        return c;
      };
      const midData = await transaction();
      midData.write('Subject: never finished\r\n\r\nhalf a mess');
      const queueing = await transaction();
      broker.hold();
      queueing.write('Subject: complete\r\n\r\nwhole message\r\n.\r\n');

      const stopped = terminateInTime(inbound);
      assert.match((await idle.read()).text, SHUTTING_DOWN);
      // at once: the message still being received is not cut yet
      assert.equal(midData.closed, false);
      broker.release();
      assert.match((await queueing.read()).text, /^250 2\.0\.0 Ok: queued as /);
      assert.match((await queueing.read()).text, SHUTTING_DOWN);
      assert.match((await midData.read(GRACE_MS + 2000)).text, SHUTTING_DOWN);
      await stopped;
      for (const c of [idle, midData, queueing]) await waitFor(() => c.closed, { what: 'connection closed' });
      // the broker's count lags a little behind
      await waitFor(async () => (await queueDepth(bed.vhost.name, 'delivery')) === 1, {
        what: 'the complete message, and only it, in the delivery queue',
      });
    },
  );
});

describe('msa at SIGTERM', () => {
  test('clients on 587 and 465 get 421 4.3.2', { timeout: 60_000 }, async () => {
    const [submission, submissions] = [await freePort(), await freePort()];
    const msa = await bed.start('msa', {
      SUBMISSION_PORT: String(submission),
      SUBMISSIONS_PORT: String(submissions),
    });
    const clients = [await smtpSession(submission), await smtpSession(submissions, true)];
    const stopped = terminateInTime(msa);
    for (const c of clients) {
      assert.match((await c.read(GRACE_MS)).text, SHUTTING_DOWN);
      await waitFor(() => c.closed, { what: 'connection closed' });
    }
    await stopped;
  });
});

describe('retrieval at SIGTERM', () => {
  test(
    'IMAP in IDLE: BYE at once; mid-APPEND literal: BYE; POP3: -ERR; then the exit',
    { timeout: 60_000 },
    async () => {
      const [imap, pop3] = [await freePort(), await freePort()];
      const retrieval = await bed.start('retrieval', {
        IMAP_PORT: String(imap),
        IMAPS_PORT: String(await freePort()),
        POP3_PORT: String(pop3),
        POP3S_PORT: String(await freePort()),
        PLAINTEXT_AUTH_NETWORKS: '127.0.0.1/32',
      });
      const login = async () => {
        const c = await RawImap.connect(imap);
        await c.until(/^\* OK/m);
        assert.match(await c.cmd('a', `LOGIN user@shut.test "${PASSWORD}"`), /^a OK/m);
        return c;
      };
      const idling = await login();
      assert.match(await idling.cmd('b', 'SELECT INBOX'), /^b OK/m);
      idling.send('c IDLE\r\n');
      await idling.until(/^\+ idling/m);
      const appending = await login();
      appending.send('d APPEND INBOX {100}\r\n');
      await appending.until(/^\+ /m);
      appending.send('Subject: half\r\n');
      const pop = await RawImap.connect(pop3);
      await pop.until(/^\+OK/m);

      const stopped = terminateInTime(retrieval);
      assert.match(await idling.until(/^\* BYE/m), /^\* BYE \[UNAVAILABLE\] /m);
      // at once: the APPEND still being received is not cut yet
      assert.equal(appending.closed, false);
      assert.match(await pop.until(/^-ERR/m), /^-ERR \[SYS\/TEMP\] /m);
      assert.match(await appending.until(/^\* BYE/m, GRACE_MS + 2000), /^\* BYE \[UNAVAILABLE\] /m);
      for (const c of [idling, appending, pop]) await c.waitClosed();
      await stopped;
    },
  );
});

describe('delivery at SIGTERM', () => {
  test(
    'stops within the grace period while consuming; every message arrives once',
    { timeout: 120_000 },
    async () => {
      const COUNT = 300;
      const bus = new Bus({
        url: bed.vhost.url,
        logger: createLogger('test', 'silent'),
        name: 'shutdown-test',
      });
      bus.start();
      await bus.waitConnected();
      await Promise.all(
        Array.from({ length: COUNT }, (_, i) => {
          const subject = `stop-${i}`;
          return bus.publishMail(
            RoutingKeys.delivery,
            Buffer.from(simpleMessage('sender@remote.test', 'user@shut.test', subject)),
            envelope('sender@remote.test', ['user@shut.test']),
          );
        }),
      );
      await bus.stop();
      const inbox = () => maildirNew(folderDir(bed.maildir, 'user@shut.test', 'INBOX'));
      const subjects = () =>
        inbox().flatMap((f) => /^Subject: (stop-\d+)/m.exec(readFileSync(f, 'utf8'))?.[1] ?? []);
      const first = await bed.start('delivery');
      await waitFor(() => subjects().length > 0, { what: 'delivery under way' });
      await terminateInTime(first);
      await bed.start('delivery');
      await waitFor(() => subjects().length >= COUNT, { timeoutMs: 60_000, what: 'every message filed' });
      assert.equal(subjects().length, COUNT, 'each message exactly once');
      assert.equal(new Set(subjects()).size, COUNT);
    },
  );
});

describe('outbound-relay at SIGTERM', () => {
  let silent: Server;
  const held: Socket[] = [];
  after(async () => {
    for (const s of held) s.destroy();
    await new Promise<void>((r) => silent?.close(() => r()));
  });

  test('a delivery stuck at a silent server goes back to the queue', { timeout: 60_000 }, async (t) => {
    // a remote MX that accepts the connection and never says a word
    const port = await freePort();
    let connected = 0;
    silent = createServer((s) => {
      connected++;
      held.push(s);
    });
    await new Promise<void>((r) => silent.listen(port, '127.0.0.21', () => r()));
    const dns = await startDnsServer({
      'far.test': { MX: [{ priority: 10, exchange: 'mx.far.test' }] },
      'mx.far.test': { A: ['127.0.0.21'] },
    });
    t.after(() => dns.close());
    const relay = await bed.start('outbound-relay', {
      OUTBOUND_PORT: String(port),
      DNS_SERVERS: dns.address,
    });
    const bus = new Bus({
      url: bed.vhost.url,
      logger: createLogger('test', 'silent'),
      name: 'shutdown-test',
    });
    bus.start();
    await bus.waitConnected();
    await bus.publishMail(
      RoutingKeys.outbound,
      Buffer.from(simpleMessage('user@shut.test', 'someone@far.test', 'stuck')),
      envelope('user@shut.test', ['someone@far.test']),
    );
    await bus.stop();
    await waitFor(() => connected > 0, { what: 'the relay connected to the silent MX' });
    await terminateInTime(relay);
    await waitFor(async () => (await queueDepth(bed.vhost.name, 'outbound')) === 1, {
      what: 'the message back in the outbound queue',
    });
  });
});

describe('policy at SIGTERM', () => {
  test(
    'a Postfix policy client connected: its connection is closed, the exit in time',
    { timeout: 60_000 },
    async () => {
      const port = await freePort();
      const policy = await bed.start('policy', { POLICY_DELEGATION_PORT: String(port) });
      const client = netConnect({ port, host: '127.0.0.1' });
      await new Promise<void>((resolve, reject) => client.once('connect', resolve).once('error', reject));
      // half a request: Postfix keeps its connection open between requests
      client.write('request=smtpd_access_policy\nprotocol_state=RCPT\n');
      const closed = new Promise<void>((r) => client.once('close', () => r()));
      client.on('error', () => undefined);
      await terminateInTime(policy);
      await closed;
    },
  );
});
