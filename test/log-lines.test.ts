// What `pnpm start` shows at LOG_LEVEL=info: each service says once that it is ready,
// naming its ports, and then one line per event. Every service runs as a process with its
// real start command (as under `pnpm start`, retrieval with two workers); one message goes
// through mta-inbound, policy and delivery into the Maildir, and each of them logs at most
// one line at info about it, carrying its queue id, and the others nothing.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import nodemailer from 'nodemailer';
import { maildirMessages, startDnsServer, waitFor, type TestDnsServer } from '@mailyard/testkit';
import { freePort, startProcessTestbed, type ProcessTestbed, type ServiceProcess } from './processes.js';

const DOMAIN = 'loglines.test';
const USER = `user@${DOMAIN}`;
const root = new URL('..', import.meta.url).pathname;

let bed: ProcessTestbed;
let dns: TestDnsServer;
before(async () => {
  dns = await startDnsServer({ [DOMAIN]: { MX: [{ priority: 10, exchange: `mx.${DOMAIN}` }] } });
  bed = await startProcessTestbed(DOMAIN, [USER], {
    LOG_LEVEL: 'info',
    DNS_SERVERS: dns.address,
    POLICY_ENABLED: 'yes',
  });
});
after(async () => {
  await bed?.close();
  await dns?.close();
});

interface Line {
  level: number;
  msg: string;
  [field: string]: unknown;
}

const INFO = 30;

/** The JSON lines a process wrote (pino's format; anything else is not a log line). */
function lines(p: ServiceProcess): Line[] {
  return p
    .output()
    .split('\n')
    .flatMap((l) => {
      try {
        const v = JSON.parse(l) as Line;
        return typeof v?.level === 'number' ? [v] : [];
      } catch {
        return [];
      }
    });
}

/** Sends one message to USER through the SMTP port, with STARTTLS as another server would. */
async function sendOne(port: number, subject: string): Promise<void> {
  const transport = nodemailer.createTransport({
    host: '127.0.0.1',
    port,
    secure: false,
    // STARTTLS, as another server sends (self-signed certificate here)
    requireTLS: true,
    tls: { rejectUnauthorized: false },
  });
  await transport.sendMail({
    envelope: { from: 'sender@remote.example', to: [USER] },
    raw: `From: sender@remote.example\r\nTo: ${USER}\r\nSubject: ${subject}\r\n\r\nHello.\r\n`,
  });
  transport.close();
}

/** Waits until USER's INBOX holds `count` messages (new/ and cur/: a running retrieval moves them). */
async function delivered(count: number): Promise<void> {
  const inbox = join(bed.maildir, DOMAIN, 'user');
  await waitFor(() => maildirMessages(inbox).length === count, {
    timeoutMs: 30_000,
    what: `message ${count} delivered`,
  });
}

test(
  'one ready line per service, then at most one info line per service for one delivery',
  { timeout: 180_000 },
  async (t) => {
    const smtpPort = await freePort();
    const port = async () => String(await freePort());
    const imapsPort = await port();
    const submissionsPort = await port();
    const serviceLogin = { SERVICE_LOGIN_PASSWORD: 'a service login secret for the test' };
    // every service `pnpm start` runs; the first three handle the message
    const services: [string, ServiceProcess][] = [
      ['policy', await bed.start('policy', { POLICY_DELEGATION_ENABLED: 'no' })],
      ['delivery', await bed.start('delivery')],
      ['mta-inbound', await bed.start('mta-inbound', { SMTP_PORT: String(smtpPort) })],
      ['outbound-relay', await bed.start('outbound-relay')],
      [
        'msa',
        await bed.start('msa', {
          SUBMISSION_PORT: await port(),
          SUBMISSIONS_PORT: submissionsPort,
          ...serviceLogin,
        }),
      ],
      [
        'retrieval',
        await bed.start('retrieval', {
          // two worker processes: the primary says ready once for the instance
          RETRIEVAL_WORKERS: '2',
          IMAP_PORT: await port(),
          IMAPS_PORT: imapsPort,
          POP3_PORT: await port(),
          POP3S_PORT: await port(),
          ...serviceLogin,
        }),
      ],
      [
        'webmail',
        await bed.start('webmail', {
          WEBMAIL_PORT: await port(),
          IMAP_SERVER: `127.0.0.1:${imapsPort}`,
          SUBMISSION_SERVER: `127.0.0.1:${submissionsPort}`,
          UPSTREAM_TLS_VERIFY: 'no',
          ...serviceLogin,
        }),
      ],
    ];
    const handling = new Set(['policy', 'delivery', 'mta-inbound']);

    // started: exactly one line at info each, "<service> ready" with its ports and metrics port
    // (a warning about the settings, such as the self-signed certificate, is another matter)
    for (const [name, p] of services) {
      // /readyz answers as the line is written: on a busy machine it reaches the pipe later
      await waitFor(() => lines(p).some((l) => l.level === INFO), {
        timeoutMs: 10_000,
        what: `${name}'s first line at info`,
      }).catch(() => undefined);
      const info = lines(p).filter((l) => l.level === INFO);
      assert.deepEqual(
        info.map((l) => l.msg),
        [`${name} ready`],
        `${name} at startup:\n${p.output()}`,
      );
      assert.equal(info[0]!.metrics, p.httpPort, name);
    }
    const ready = (name: string) =>
      lines(services.find(([n]) => n === name)![1]).find((l) => l.msg === `${name} ready`)!;
    assert.equal(ready('mta-inbound').smtp, smtpPort);
    assert.equal(ready('msa').submissions, Number(submissionsPort));
    assert.equal(ready('retrieval').imaps, Number(imapsPort));
    assert.equal(ready('retrieval').workers, 2);
    assert.equal(typeof ready('webmail').https, 'number');
    const startup = new Map(services.map(([name, p]) => [name, lines(p).length]));

    await sendOne(smtpPort, 'one line each');
    await delivered(1);
    // the delivery service tells of it once the folder is synced, after the file is there
    const delivery = services.find(([name]) => name === 'delivery')![1];
    await waitFor(() => lines(delivery).some((l) => l.msg === 'delivered'), {
      timeoutMs: 10_000,
      what: 'the delivery line',
    });

    // stopped, each has written all it had to say about the message; what it says from
    // the signal on is about stopping
    const stopAt = Date.now();
    // all at once: what each says from the signal on is left out below, whatever the order
    await Promise.all(services.map(([, p]) => p.terminate()));
    const report: string[] = [];
    let queueId: unknown = null;
    for (const [name, p] of services) {
      const after = lines(p)
        .slice(startup.get(name))
        .filter((l) => (l.time as number) < stopAt);
      // nothing went wrong with it
      assert.deepEqual(
        after.filter((l) => l.level > INFO),
        [],
        name,
      );
      const during = after.filter((l) => l.level === INFO);
      report.push(`${name}: ${during.length} (${during.map((l) => l.msg).join(' | ')})`);
      const most = handling.has(name) ? 1 : 0;
      assert.ok(during.length <= most, `${name} logged ${during.length} lines at info:\n${p.output()}`);
      for (const l of during) {
        assert.ok(l.queueId, `${name}: "${l.msg}" has no queue id`);
        queueId ??= l.queueId;
        assert.equal(l.queueId, queueId, `${name}: the same message`);
      }
    }
    t.diagnostic(report.join('; '));
    // the intake and delivery each tell of it (policy may stay silent about mail it lets through)
    assert.ok(report.includes('delivery: 1 (delivered)'), report.join('\n'));
    assert.ok(report.includes('mta-inbound: 1 (accepted)'), report.join('\n'));
  },
);

test(
  '`pnpm start` at LOG_LEVEL=info: one terminal line per service that handled a delivery',
  { timeout: 180_000 },
  async (t) => {
    const smtpPort = await freePort();
    const start = spawn('pnpm', ['--silent', 'start'], {
      cwd: root,
      env: {
        ...process.env,
        ...bed.env,
        SERVICES: 'policy,delivery,mta-inbound',
        HTTP_PORT: '0',
        LISTEN_ADDRESS: '127.0.0.1',
        LOG_LEVEL: 'info',
        SMTP_PORT: String(smtpPort),
        POLICY_DELEGATION_ENABLED: 'no',
      },
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    start.stdout.on('data', (d: Buffer) => (out += d.toString()));
    start.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((r) => start.once('exit', r));
    // what a person reads: colours taken out
    const terminal = () => out.replace(/\x1b\[[0-9;]*m/g, '').split('\n');
    const services = ['policy', 'delivery', 'mta-inbound'];
    try {
      const metricsPorts = await waitFor(
        () => {
          const found = services.map((s) => {
            const line = terminal().find((l) => l.includes(`(${s}): ${s} ready {`));
            return line && /"metrics":(\d+)[,}]/.exec(line)?.[1];
          });
          return found.every(Boolean) ? found.map(Number) : null;
        },
        { timeoutMs: 90_000, what: `the ready lines:\n${out}` },
      );
      // the ready line says a service listens; its broker connection may come a moment later,
      // and a message meanwhile is deferred (451): wait for /readyz, as an orchestrator does
      for (const port of metricsPorts)
        await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).ok, {
          timeoutMs: 60_000,
          what: `readyz on ${port}:\n${out}`,
        });
      const before = terminal().length - 1;
      await sendOne(smtpPort, 'one terminal line each');
      // the second message of the file's testbed
      await delivered(2);
      await waitFor(() => terminal().some((l) => /\(delivery\): delivered \{/.test(l)), {
        timeoutMs: 10_000,
        what: 'the delivery line',
      });
      process.kill(-start.pid!, 'SIGINT');
      await exited;
      const during = terminal().slice(before);
      const stopping = during.findIndex((l) => l.includes('shutting down'));
      const shown = during.slice(0, stopping < 0 ? undefined : stopping).filter(Boolean);
      t.diagnostic(shown.join('\n'));
      for (const s of services) {
        const mine = shown.filter((l) => l.includes(`(${s}):`));
        assert.ok(mine.length <= 1, `${s} printed ${mine.length} lines:\n${mine.join('\n')}`);
      }
      // nothing but those lines: no field on a line of its own, nothing from pnpm
      assert.ok(shown.length <= services.length, shown.join('\n'));
      assert.ok(
        shown.every((l) => /^\[[\d:.]+\] INFO \([\w-]+\): \w/.test(l)),
        shown.join('\n'),
      );
    } finally {
      if (start.exitCode === null && start.signalCode === null) process.kill(-start.pid!, 'SIGKILL');
    }
  },
);
