import assert from 'node:assert/strict';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { EICAR, startClamd, type Scanner } from '@mailyard/testkit';
import { clamdScan } from '../src/clamd.js';

// The clamd client against a real clamd, through a proxy on loopback that counts the
// connections and can end them as clamd does when a session has been idle too long.

const T = { timeout: 60_000 };
let clamd: Scanner;
let proxy: Server;
let proxyUrl: string;
/** Connections the proxy took (one per clamd session). */
let accepted = 0;
/**
 * What the proxy does with the next command on a connection that has had an answer:
 * `drop` ends it silently, `read-timeout` as clamd's ReadTimeout ends an unused session
 * (a line without the command's number, then the end), `error` answers an error itself.
 */
let onKept: 'pass' | 'drop' | 'read-timeout' | 'error' = 'pass';
/** When set, the proxy passes nothing on to clamd (a clamd that never answers). */
let swallow = false;
const open = new Set<Socket>();

before(
  async () => {
    clamd = await startClamd();
    const target = new URL(clamd.url);
    proxy = createServer((client) => {
      accepted++;
      open.add(client);
      const upstream = connect(Number(target.port), target.hostname);
      let answered = false;
      let answers = 0;
      client.on('data', (d) => {
        if (answered && onKept === 'drop') client.destroy();
        else if (answered && onKept === 'read-timeout') client.end('COMMAND READ TIMED OUT\n');
        else if (answered && onKept === 'error')
          client.write(`${answers + 1}: stream: Can't allocate memory ERROR\0`);
        else if (!swallow) upstream.write(d);
      });
      upstream.on('data', (d) => {
        client.write(d);
        if (d.includes(0)) {
          answered = true;
          answers++;
        }
      });
      const down = () => {
        client.destroy();
        upstream.destroy();
        open.delete(client);
      };
      client.on('close', down);
      upstream.on('close', down);
      client.on('error', down);
      upstream.on('error', down);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    proxyUrl = `tcp://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  },
  { timeout: 240_000 },
);
after(async () => {
  for (const s of open) s.destroy();
  proxy?.close();
  await clamd?.stop();
});

const clean = (n: number) => Buffer.from(`Subject: note ${n}\r\n\r\n${'hello world\r\n'.repeat(800)}`);
const infected = Buffer.from(`Subject: eicar\r\n\r\n${EICAR}\r\n`);

test('scans one after another share one connection to clamd, and each gets its own answer', T, async () => {
  const before = accepted;
  for (let i = 0; i < 10; i++) {
    assert.deepEqual(await clamdScan(proxyUrl, clean(i), 10_000), { infected: false });
    const r = await clamdScan(proxyUrl, infected, 10_000);
    assert.equal(r.infected, true);
    assert.match((r as { signature: string }).signature, /Mailyard\.Test\.EICAR/);
  }
  assert.equal(accepted - before, 1, 'one session for twenty scans');
});

test('scans at once take a connection each; the next burst reuses them', T, async () => {
  const before = accepted;
  const burst = () =>
    Promise.all(
      Array.from({ length: 5 }, (_, i) => clamdScan(proxyUrl, i % 2 ? infected : clean(i), 10_000)),
    );
  const first = await burst();
  assert.deepEqual(
    first.map((r) => r.infected),
    [false, true, false, true, false],
  );
  const opened = accepted - before;
  assert.ok(opened >= 4 && opened <= 5, `${opened} connections for 5 scans at once (one may be reused)`);
  const second = await burst();
  assert.deepEqual(
    second.map((r) => r.infected),
    [false, true, false, true, false],
  );
  assert.equal(accepted - before, opened, 'no new connection for the second burst');
});

for (const how of ['drop', 'read-timeout'] as const)
  test(
    `a kept session clamd ends as a scan starts (${how}) costs no scan: it is made on a new one`,
    T,
    async () => {
      onKept = how;
      try {
        const before = accepted;
        for (let i = 0; i < 5; i++) {
          assert.deepEqual(await clamdScan(proxyUrl, clean(i), 10_000), { infected: false });
          assert.equal((await clamdScan(proxyUrl, infected, 10_000)).infected, true);
        }
        assert.equal(accepted - before, 10, 'each scan found its kept session ended and opened one');
      } finally {
        onKept = 'pass';
      }
    },
  );

test('an error answer on a kept session fails the scan, which is not made again', T, async () => {
  await clamdScan(proxyUrl, clean(0), 10_000);
  onKept = 'error';
  try {
    const before = accepted;
    await assert.rejects(clamdScan(proxyUrl, clean(1), 10_000), /Can't allocate memory ERROR/);
    assert.equal(accepted - before, 0, 'no new connection: the scan was not sent again');
  } finally {
    onKept = 'pass';
  }
  assert.deepEqual(await clamdScan(proxyUrl, clean(2), 10_000), { infected: false });
});

test('no answer within the deadline is an error, and the session is not used again', T, async () => {
  await clamdScan(proxyUrl, clean(0), 10_000);
  swallow = true;
  try {
    await assert.rejects(clamdScan(proxyUrl, clean(1), 500), /clamd did not answer within 500 ms/);
  } finally {
    swallow = false;
  }
  const before = accepted;
  // the silent session was closed: a late answer can never be read as the next scan's
  assert.deepEqual(await clamdScan(proxyUrl, clean(2), 10_000), { infected: false });
  assert.equal(await clamdScan(proxyUrl, infected, 10_000).then((r) => r.infected), true);
  assert.ok(accepted - before <= 1, 'at most one new connection');
});

test('clamd gone: the scan fails with a connection error, never a verdict', T, async () => {
  const gone = createServer();
  await new Promise<void>((r) => gone.listen(0, '127.0.0.1', r));
  const port = (gone.address() as AddressInfo).port;
  await new Promise((r) => gone.close(r));
  await assert.rejects(clamdScan(`tcp://127.0.0.1:${port}`, clean(0), 5_000), /ECONNREFUSED/);
});
