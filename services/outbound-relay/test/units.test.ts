import assert from 'node:assert/strict';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { ConfigError, loadConfig } from '@mailyard/config';
import { outboundDelayQueue } from '@mailyard/contracts';
import { createResolver, type MailResolver } from '@mailyard/dns';
import { createTestRedis, startDnsServer, waitFor } from '@mailyard/testkit';
import { DestinationLimits } from '../src/destination-limits.js';
import {
  encodeData,
  httpsPolicyFetcher,
  lookupMx,
  mxMatches,
  parsePolicy,
  outboundRelaySchema,
  parseRelayhost,
  routeDomain,
  SmtpClient,
} from '../src/index.js';
import type { OpenOptions } from '../src/smtp-client.js';
import { FAILED_FETCH_MS, MtaSts } from '../src/mta-sts.js';
import { tlsPair } from './helpers.js';

/** Reverses encodeData the way a receiving SMTP server does (RFC 5321 §4.5.2). */
function decodeData(wire: Buffer): string {
  const text = wire.toString('utf8');
  if (text === '.\r\n') return '';
  assert.ok(text.endsWith('\r\n.\r\n'), 'ends with CRLF.CRLF');
  const body = text.slice(0, -3);
  return body
    .split('\r\n')
    .map((l) => (l.startsWith('.') ? l.slice(1) : l))
    .join('\r\n');
}

/** Listens on a free loopback port; the port. */
async function listenLocal(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

/** A client session to the test MX listening on loopback `port`. */
const openMx = (port: number, opts: Partial<OpenOptions> = {}) =>
  SmtpClient.open({
    host: 'mx.test',
    ip: '127.0.0.1',
    port,
    connectTimeoutMs: 10_000,
    replyTimeoutMs: 30_000,
    ...opts,
  });

describe('encodeData', () => {
  test('bare LF and bare CR become CRLF; dots are stuffed', () => {
    const wire = encodeData(Buffer.from('.first\nsecond\r.\r\n..x\r\nlast'));
    assert.equal(wire.toString(), '..first\r\nsecond\r\n..\r\n...x\r\nlast\r\n.\r\n');
  });

  test('no input can end the data early or carry a bare LF (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('a', '.', '\r', '\n', '\r\n', ' ', 'ü'), { maxLength: 60 }),
        (parts) => {
          const input = parts.join('');
          const wire = encodeData(Buffer.from(input)).toString('latin1');
          // the only <CRLF>.<CRLF> is the terminator
          const end = wire.indexOf('\r\n.\r\n');
          assert.ok(end === -1 ? wire === '.\r\n' : end === wire.length - 5, JSON.stringify(wire));
          assert.ok(!/[^\r]\n|\r[^\n]/.test(wire), 'no bare CR/LF');
          const normalized = input.replace(/\r\n|\r|\n/g, '\r\n');
          const expected =
            normalized === '' || normalized.endsWith('\r\n') ? normalized : normalized + '\r\n';
          assert.equal(decodeData(Buffer.from(wire, 'latin1')), expected);
        },
      ),
    );
  });
});

describe('lookupMx', () => {
  const resolver = (mx: { exchange: string; priority: number }[]): MailResolver =>
    ({ resolveMx: async () => mx }) as unknown as MailResolver;

  test('by preference, every order of equals occurs', async () => {
    const r = resolver([
      { exchange: 'c.test', priority: 20 },
      { exchange: 'a.test', priority: 10 },
      { exchange: 'b.test', priority: 10 },
    ]);
    const seen = new Set<string>();
    for (let i = 0; i < 50; i++) {
      const res = await lookupMx(r, 'x.test');
      assert.equal(res.kind, 'mx');
      if (res.kind !== 'mx') return;
      assert.equal(res.hosts[2]!.host, 'c.test');
      seen.add(res.hosts.map((h) => h.host).join(','));
    }
    assert.deepEqual([...seen].sort(), ['a.test,b.test,c.test', 'b.test,a.test,c.test']);
  });

  test('null MX (RFC 7505)', async () => {
    assert.equal((await lookupMx(resolver([{ exchange: '', priority: 0 }]), 'x.test')).kind, 'null');
  });
});

describe('MTA-STS', () => {
  test(
    'a policy server that sends a byte now and then is given up at the deadline',
    { timeout: 30_000 },
    async () => {
      const pair = tlsPair('mta-sts.slow.test');
      const drips = new Set<NodeJS.Timeout>();
      const server = createHttpsServer({ key: pair.key, cert: pair.cert }, (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        // never idle for long, never done
        const drip = setInterval(() => res.write('#'), 100);
        drips.add(drip);
        res.on('close', () => clearInterval(drip));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      try {
        const fetch = httpsPolicyFetcher({
          resolver: { resolve4: async () => ['127.0.0.1'] } as unknown as MailResolver,
          ca: pair.cert,
          port: (server.address() as AddressInfo).port,
          timeoutMs: 1000,
        });
        const started = Date.now();
        await assert.rejects(fetch('slow.test'));
        assert.ok(Date.now() - started < 10_000, `given up after ${Date.now() - started} ms`);
      } finally {
        for (const d of drips) clearInterval(d);
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
      }
    },
  );

  test('a failing policy server is asked once for messages at once, then not for a while', async () => {
    const dns = await startDnsServer({ '_mta-sts.broken.test': { TXT: ['v=STSv1; id=1'] } });
    try {
      const clock = { now: Date.parse('2026-01-01T00:00:00Z') };
      let fetches = 0;
      let fail: (err: Error) => void = () => undefined;
      const sts = new MtaSts({
        resolver: createResolver({ servers: [dns.address], cache: false }),
        // a policy server that takes its time and then fails
        fetcher: () => {
          fetches++;
          return new Promise<string>((_resolve, reject) => (fail = reject));
        },
        now: () => clock.now,
      });
      // ten messages to the domain at once: one fetch, and each goes on without a policy
      const asked = Array.from({ length: 10 }, () => sts.policyFor('broken.test'));
      await waitFor(() => fetches === 1, { what: 'the fetch' });
      fail(new Error('connect ETIMEDOUT'));
      assert.deepEqual(await Promise.all(asked), Array(10).fill(null));
      assert.equal(fetches, 1, 'one fetch for them all');
      // the next messages do not wait for another fetch
      assert.equal(await sts.policyFor('broken.test'), null);
      assert.equal(fetches, 1, 'not fetched again at once');
      // some minutes later, it is tried again
      clock.now += FAILED_FETCH_MS + 1;
      const later = sts.policyFor('broken.test');
      await waitFor(() => fetches === 2, { what: 'the fetch, tried again' });
      fail(new Error('connect ETIMEDOUT'));
      assert.equal(await later, null);
    } finally {
      await dns.close();
    }
  });

  test('expired policies and failed fetches are not kept for the life of the process', async () => {
    const zone = Object.fromEntries(
      ['a', 'b', 'c', 'd', 'broken'].map((n) => [`_mta-sts.${n}.test`, { TXT: ['v=STSv1; id=1'] }]),
    );
    const dns = await startDnsServer(zone);
    try {
      const clock = { now: Date.parse('2026-01-01T00:00:00Z') };
      const sts = new MtaSts({
        resolver: createResolver({ servers: [dns.address], cache: false }),
        fetcher: async (d) => {
          if (d === 'broken.test') throw new Error('connect ECONNREFUSED');
          return `version: STSv1\nmode: enforce\nmx: mx.${d}\nmax_age: 86400\n`;
        },
        now: () => clock.now,
      });
      for (const d of ['a.test', 'b.test', 'c.test', 'broken.test']) await sts.policyFor(d);
      assert.equal(sts.held, 4);
      // a day and more later, every one has expired: the next fetch clears them away
      clock.now += 86_400_000 + FAILED_FETCH_MS;
      assert.equal((await sts.policyFor('d.test'))?.mode, 'enforce');
      assert.equal(sts.held, 1);
    } finally {
      await dns.close();
    }
  });

  test('policy parsing', () => {
    assert.deepEqual(
      parsePolicy(
        'version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 604800\n',
      ),
      {
        mode: 'enforce',
        mx: ['mail.example.com', '*.example.net'],
        maxAge: 604800,
      },
    );
    assert.equal(parsePolicy('version: STSv2\nmode: enforce\nmx: a\nmax_age: 1'), null);
    assert.equal(parsePolicy('version: STSv1\nmode: enforce\nmax_age: 1'), null);
  });

  test('MX patterns: a wildcard covers exactly one label (RFC 8461 §4.1)', () => {
    assert.ok(mxMatches('mx1.example.net', ['*.example.net']));
    assert.ok(!mxMatches('a.b.example.net', ['*.example.net']));
    assert.ok(!mxMatches('example.net', ['*.example.net']));
    assert.ok(mxMatches('MAIL.example.com.', ['mail.example.com']));
  });
});

describe('a server that does not stop talking', () => {
  /** An MX on loopback that greets with `send` written over and over while the client reads. */
  async function endless(chunk: string) {
    const sockets = new Set<Socket>();
    const server = createTcpServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
      const pump = () => {
        while (!s.destroyed && s.write(chunk));
        if (!s.destroyed) s.once('drain', pump);
      };
      pump();
    });
    const port = await listenLocal(server);
    const close = () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    };
    return { port, close };
  }
  const open = (port: number) => openMx(port, { replyTimeoutMs: 300_000 });

  // Without limits, memory grew by 40 MB a second until the 300 s reply timeout
  test('an endless multi-line reply fails the connection', { timeout: 60_000 }, async () => {
    const mx = await endless('220-mx.test still greeting\r\n'.repeat(100));
    try {
      await assert.rejects(open(mx.port), /mx\.test\[127\.0\.0\.1\]: reply of more than 1000 lines/);
    } finally {
      await mx.close();
    }
  });

  test('a reply line without an end fails the connection', { timeout: 60_000 }, async () => {
    const mx = await endless('x'.repeat(65_536));
    try {
      await assert.rejects(open(mx.port), /reply line longer than 4096 bytes/);
    } finally {
      await mx.close();
    }
  });
});

test(
  'a pipelined transaction of 1000 recipients answered in one burst is read whole',
  { timeout: 60_000 },
  async () => {
    // as Postfix or Gmail answer a pipelined group: every reply in one write
    const server = createTcpServer((s) => {
      s.on('error', () => undefined);
      let buf = '';
      let inData = false;
      s.write('220 mx.test ESMTP\r\n');
      s.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        if (inData) {
          if (!buf.endsWith('\r\n.\r\n')) return;
          inData = false;
          buf = '';
          return void s.write('250 2.0.0 queued\r\n');
        }
        if (buf.startsWith('EHLO') && buf.endsWith('\r\n')) {
          buf = '';
          return void s.write('250-mx.test\r\n250 PIPELINING\r\n');
        }
        if (!buf.endsWith('DATA\r\n')) return;
        const rcpts = buf.split('\r\n').filter((l) => l.startsWith('RCPT')).length;
        buf = '';
        inData = true;
        s.write('250 2.1.0 ok\r\n' + '250 2.1.5 ok\r\n'.repeat(rcpts) + '354 go on\r\n');
      });
    });
    const port = await listenLocal(server);
    try {
      const c = await openMx(port);
      assert.equal((await c.ehlo('relay.example.test')).code, 250);
      const recipients = Array.from({ length: 1000 }, (_, i) => `r${i}@mx.test`);
      const res = await c.transaction({
        from: 'a@example.test',
        mailParams: [],
        recipients,
        data: Buffer.from('Subject: hi\r\n\r\nhello\r\n'),
      });
      assert.equal(res.rcpts.filter((r) => r.code === 250).length, 1000);
      assert.equal(res.data?.code, 250);
      c.close();
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  },
);

test(
  'a reply that is a bare code ends the reply (RFC 5321 §4.2), not the connection',
  { timeout: 60_000 },
  async () => {
    // every reply a code alone, the one after the data included
    const received: string[] = [];
    const server = createTcpServer((s) => {
      s.on('error', () => undefined);
      let buf = '';
      let inData = false;
      s.write('220\r\n');
      s.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        for (let i = buf.indexOf('\r\n'); i >= 0 && !inData; i = buf.indexOf('\r\n')) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (/^EHLO/i.test(line)) s.write('250-mx.test\r\n250\r\n');
          else if (/^DATA/i.test(line)) {
            inData = true;
            s.write('354\r\n');
          } else s.write('250\r\n');
        }
        if (inData && buf.endsWith('\r\n.\r\n')) {
          received.push(buf);
          inData = false;
          buf = '';
          s.write('250\r\n');
        }
      });
    });
    const port = await listenLocal(server);
    try {
      const c = await openMx(port);
      assert.equal((await c.ehlo('relay.example.test')).code, 250);
      const res = await c.transaction({
        from: 'a@example.test',
        mailParams: [],
        recipients: ['b@mx.test'],
        data: Buffer.from('Subject: hi\r\n\r\nhello\r\n'),
      });
      assert.deepEqual([res.mail.code, res.rcpts[0]!.code, res.data?.code], [250, 250, 250]);
      assert.deepEqual(res.data?.lines, ['']);
      assert.equal(received.length, 1, 'the message was sent once');
      c.close();
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  },
);

describe('the message and the reply after it (smtp_data_xfer_timeout, smtp_data_done_timeout)', () => {
  /** An MX that reads the message as `reading` says and answers it `answerAfterMs` after its dot. */
  async function mx(reading: 'slowly' | 'never', answerAfterMs = 0) {
    const received: number[] = [];
    const sockets = new Set<Socket>();
    const server = createTcpServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
      let buf = Buffer.alloc(0);
      let inData = false;
      let size = 0;
      s.write('220 mx.test ESMTP\r\n');
      s.on('data', (d: Buffer) => {
        if (inData) {
          if (reading === 'never') return void s.pause();
          // a chunk at a time, with a pause after each: progress, but slow
          s.pause();
          setTimeout(() => s.resume(), 20);
          size += d.length;
          buf = Buffer.concat([buf.subarray(-4), d]);
          if (buf.subarray(-5).toString() !== '\r\n.\r\n') return;
          received.push(size);
          inData = false;
          return void setTimeout(() => s.write('250 2.0.0 queued\r\n'), answerAfterMs);
        }
        const line = d.toString();
        if (/^EHLO/.test(line)) s.write('250-mx.test\r\n250 8BITMIME\r\n');
        else if (/^DATA/.test(line)) {
          inData = true;
          s.write('354 go on\r\n');
        } else s.write('250 ok\r\n');
      });
    });
    const port = await listenLocal(server);
    const close = () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    };
    return { port, received, close };
  }
  const send = async (port: number, size: number, timeouts: { xfer: number; done: number }) => {
    const c = await openMx(port, {
      replyTimeoutMs: 500,
      dataXferTimeoutMs: timeouts.xfer,
      dataDoneTimeoutMs: timeouts.done,
    });
    try {
      assert.equal((await c.ehlo('relay.example.test')).code, 250);
      const body = 'Subject: big\r\n\r\n' + `${'x'.repeat(998)}\r\n`.repeat(Math.ceil(size / 1000));
      return await c.transaction({
        from: 'a@example.test',
        mailParams: [],
        recipients: ['b@mx.test'],
        data: Buffer.from(body),
      });
    } finally {
      c.close();
    }
  };

  test(
    'a slow transfer and a slow answer, each within its own limit, deliver once',
    { timeout: 60_000 },
    async () => {
      // the transfer takes seconds, more than twice its limit for no progress (2 s), and the
      // answer longer than a reply may (500 ms): neither sends the message again
      const server = await mx('slowly', 1500);
      try {
        const res = await send(server.port, 16 << 20, { xfer: 2000, done: 5000 });
        assert.equal(res.data?.code, 250);
        assert.equal(server.received.length, 1);
      } finally {
        await server.close();
      }
    },
  );

  test(
    'a server that stops taking the message fails the transfer at its limit',
    { timeout: 60_000 },
    async () => {
      const server = await mx('never');
      try {
        await assert.rejects(
          send(server.port, 32 << 20, { xfer: 1000, done: 60_000 }),
          /the message not taken for 1000 ms/,
        );
      } finally {
        await server.close();
      }
    },
  );
});

test('relayhost syntax (Postfix)', () => {
  assert.deepEqual(parseRelayhost('[smtp.example.com]:587', 25), {
    host: 'smtp.example.com',
    port: 587,
    mx: false,
  });
  assert.deepEqual(parseRelayhost('example.com', 25), { host: 'example.com', port: 25, mx: true });
  assert.equal(parseRelayhost('', 25), null);
});

test('delay queue names', () => {
  assert.equal(outboundDelayQueue(60_000), 'outbound.retry.1m');
  assert.equal(outboundDelayQueue(14_400_000), 'outbound.retry.4h');
  assert.equal(outboundDelayQueue(90_000), 'outbound.retry.90s');
  assert.equal(outboundDelayQueue(200), 'outbound.retry.200ms');
});

test('a message is waiting for a slot from the moment it asks, before its first attempt returns', async (t) => {
  const tr = createTestRedis();
  t.after(() => tr.cleanup());
  const limits = new DestinationLimits(tr.redis, { concurrency: 1, ratePerMinute: 0 });
  const release = await limits.acquire('one.test', Date.now() + 5000);
  assert.ok(release);
  assert.equal(await limits.contended('one.test'), false, 'the holder alone');
  // the second message's first attempt is in flight: a holder finishing now must not
  // park its session (and keep the slot) as if nobody waited
  const waiter = limits.acquire('one.test', Date.now() + 10_000);
  assert.equal(limits.waitingHere('one.test'), true);
  assert.equal(await limits.contended('one.test'), true);
  await release();
  const second = await waiter;
  assert.ok(second, 'the slot passed to the waiter');
  assert.equal(limits.waitingHere('one.test'), false);
  await second();
});

test(
  'messages waiting for a busy destination leave its rate budget to those that send',
  { timeout: 30_000 },
  async (t) => {
    const tr = createTestRedis();
    t.after(() => tr.cleanup());
    const limits = new DestinationLimits(tr.redis, { concurrency: 1, ratePerMinute: 5 });
    const destination = `budget-${process.pid}.test`;
    // the budget counts per minute of the clock: all of this within one minute (a budget
    // used up would otherwise come back at the turn of the minute)
    const left = 60_000 - (Date.now() % 60_000);
    if (left < 15_000) await new Promise((r) => setTimeout(r, left + 10));
    const first = await limits.acquire(destination, Date.now() + 5000);
    assert.ok(first);
    // three more wait, polling, while the only slot is held for a while
    const waiting = [1, 2, 3].map(() => limits.acquire(destination, Date.now() + 10_000));
    await new Promise((r) => setTimeout(r, 1500));
    await first();
    // each gets the slot in turn, whichever first, and gives it up: four messages in all,
    // within the five a minute
    const turns = await Promise.all(
      waiting.map(async (w) => {
        const release = await w;
        await release?.();
        return release !== null;
      }),
    );
    assert.deepEqual(turns, [true, true, true], 'every waiting message got its turn');
  },
);

describe('an MX host that is ourselves (loop detection)', () => {
  const own = (ip: string) => ip === '127.0.0.1';
  const route = async (
    zone: Parameters<typeof startDnsServer>[0],
    domain: string,
    opts: Partial<Parameters<typeof routeDomain>[2]> = {},
  ) => {
    const dns = await startDnsServer(zone);
    try {
      const resolver = createResolver({ servers: [dns.address], cache: false });
      return await routeDomain(resolver, domain, {
        port: 25,
        families: 'all',
        preference: 'any',
        addressLimit: 5,
        isOwnAddress: own,
        ...opts,
      });
    } finally {
      await dns.close();
    }
  };

  test('among equally preferred hosts we are found past the address limit, whatever the order', async () => {
    // Postfix truncates the list at the first address of ours: its equals go with it
    const zone = {
      'eq.test': {
        MX: [
          { priority: 10, exchange: 'peer.eq.test' },
          { priority: 10, exchange: 'self.eq.test' },
        ],
      },
      'peer.eq.test': { A: ['127.0.0.61'] },
      'self.eq.test': { A: ['127.0.0.1'] },
    };
    for (const random of [() => 0, () => 0.99]) {
      const r = await route(zone, 'eq.test', { addressLimit: 1, random });
      assert.equal(r.kind, 'permanent');
      assert.equal(r.kind === 'permanent' && r.status, '5.4.6');
    }
  });

  test('behind a better MX that MTA-STS leaves out we are a backup MX: deferred, not bounced', async () => {
    const zone = {
      'sts.test': {
        MX: [
          { priority: 10, exchange: 'mx1.sts.test' },
          { priority: 20, exchange: 'self.sts.test' },
        ],
      },
      'mx1.sts.test': { A: ['127.0.0.62'] },
      'self.sts.test': { A: ['127.0.0.1'] },
    };
    const r = await route(zone, 'sts.test', { hostFilter: (h) => h !== 'mx1.sts.test' });
    assert.equal(r.kind, 'temporary');
    assert.equal(r.kind === 'temporary' && r.status, '4.4.4');
  });

  test('INET_INTERFACES and PROXY_INTERFACES take no listen-everywhere address', () => {
    for (const [key, value] of [
      ['INET_INTERFACES', '0.0.0.0'],
      ['INET_INTERFACES', '::'],
      ['INET_INTERFACES', '::ffff:0.0.0.0'],
      ['INET_INTERFACES', '0::'],
      ['PROXY_INTERFACES', '0.0.0.0'],
    ] as const)
      assert.throws(
        () => loadConfig(outboundRelaySchema, { env: { [key]: value } }),
        (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.startsWith(`${key}: `)),
      );
    assert.deepEqual(loadConfig(outboundRelaySchema, { env: { INET_INTERFACES: 'all' } }).inet_interfaces, [
      'all',
    ]);
  });
});
