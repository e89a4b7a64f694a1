// The ACME issuer against Debian's pebble on loopback: pebble resolves the name through
// testkit's DNS server and fetches the HTTP-01 answer from our challenge listener; the
// certificate is then served by a real TLS listener, and a renewal reaches new
// connections while an open one keeps the certificate it started with.
import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, request } from 'node:http';
import { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type Server, type TLSSocket } from 'node:tls';
import { after, before, test } from 'node:test';
import { selfSignedCertificate } from '@mailyard/config';
import {
  createTestRedis,
  skipWithout,
  startDnsServer,
  waitFor,
  type TestDnsServer,
  type TestRedis,
} from '@mailyard/testkit';
import {
  createAcmeIssuer,
  createHttpChallengeServer,
  createTlsSource,
  followCertificate,
  type AcmeOptions,
  type TlsSource,
} from '../src/index.js';
import { PEBBLE_BIN, startPebble, type Pebble } from './pebble.js';

const HOST = 'mail.example.test';
const quiet = { info: () => undefined, warn: () => undefined };

let r: TestRedis;
let dns: TestDnsServer;
let pebble: Pebble;
let challenges: ReturnType<typeof createHttpChallengeServer>;
let dir: string;

before(async () => {
  r = createTestRedis();
  dns = await startDnsServer({ [HOST]: { A: ['127.0.0.1'] } });
  challenges = createHttpChallengeServer({ redis: r.redis, hostname: HOST, logger: quiet });
  await new Promise<void>((resolve) => challenges.listen(0, '127.0.0.1', resolve));
  pebble = await startPebble({
    httpPort: (challenges.address() as AddressInfo).port,
    dnsServer: dns.address,
  });
  dir = mkdtempSync(join(tmpdir(), 'mailyard-acme-'));
});
after(async () => {
  await pebble?.stop();
  challenges?.close();
  await dns?.close();
  await r?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const options = (over: Partial<AcmeOptions> = {}): AcmeOptions => ({
  directoryUrl: pebble.directoryUrl,
  caFile: pebble.caFile,
  email: 'postmaster@example.test',
  domains: [HOST],
  challenge: 'http-01',
  certFile: join(dir, 'fullchain.pem'),
  keyFile: join(dir, 'privkey.pem'),
  renewBefore: 30 * 86400_000,
  checkInterval: 3600_000,
  ...over,
});

/** A TLS listener on the source's certificate, echoing what it reads. */
async function echoServer(source: TlsSource): Promise<{ server: Server; port: number }> {
  const { key, cert } = source.current();
  const server = createServer({ key, cert, minVersion: 'TLSv1.2' }, (s) => s.pipe(s));
  followCertificate(source, server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

const open = (port: number, ca: string) =>
  new Promise<TLSSocket>((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', servername: HOST, ca }, () => resolve(s));
    s.once('error', reject);
  });

const echo = (s: TLSSocket, text: string) =>
  new Promise<string>((resolve) => {
    s.once('data', (d: Buffer) => resolve(d.toString()));
    s.write(text);
  });

test(
  'obtains a certificate from pebble through HTTP-01 and serves it; a renewal reaches new connections only',
  {
    timeout: 120_000,
    skip: skipWithout(existsSync(PEBBLE_BIN), 'pebble is not installed (apt-get install pebble)'),
  },
  async () => {
    const opts = options();
    // the listener starts before any certificate exists, as a service does
    const source = createTlsSource({
      certFile: opts.certFile,
      keyFile: opts.keyFile,
      hostname: HOST,
      reloadInterval: 50,
      waitForFiles: true,
      logger: quiet,
    });
    assert.equal(source.current().selfSigned, true);
    const { server, port } = await echoServer(source);
    try {
      assert.equal(await createAcmeIssuer(opts, { redis: r.redis, logger: quiet }).check(), 'issued');
      const root = await pebble.root();
      const first = await waitFor(() => open(port, root), {
        timeoutMs: 10_000,
        what: 'the ACME certificate served',
      });
      assert.equal(first.authorized, true);
      const served = first.getPeerCertificate();
      const serial1 = served.serialNumber;
      assert.match(served.subjectaltname ?? '', /DNS:mail\.example\.test/);

      // nothing to renew: the same certificate stays
      assert.equal(await createAcmeIssuer(opts, { redis: r.redis, logger: quiet }).check(), 'valid');

      // due for renewal (pebble's certificates live for years: renew when less than a century is left)
      const renewing = createAcmeIssuer(options({ renewBefore: 100 * 365 * 86400_000 }), {
        redis: r.redis,
        logger: quiet,
      });
      assert.equal(await renewing.check(), 'issued');
      const second = await waitFor(
        async () => {
          const s = await open(port, root);
          if (s.getPeerCertificate().serialNumber !== serial1) return s;
          s.destroy();
          return null;
        },
        { timeoutMs: 10_000, what: 'a new connection to see the renewed certificate' },
      );
      assert.equal(second.authorized, true);
      // the connection opened before the renewal is still up, on the old certificate
      assert.equal(await echo(first, 'still here'), 'still here');
      assert.equal(first.getPeerCertificate().serialNumber, serial1);
      first.destroy();
      second.destroy();
    } finally {
      source.close();
      server.close();
    }
  },
);

test(
  'a key left from a renewal that stopped half-way is found, and the pair ordered again',
  {
    timeout: 120_000,
    skip: skipWithout(existsSync(PEBBLE_BIN), 'pebble is not installed (apt-get install pebble)'),
  },
  async () => {
    const opts = options({
      certFile: join(dir, 'half-fullchain.pem'),
      keyFile: join(dir, 'half-privkey.pem'),
    });
    const issuer = createAcmeIssuer(opts, { redis: r.redis, logger: quiet });
    assert.equal(await issuer.check(), 'issued');
    assert.equal(await issuer.check(), 'valid');
    // the new key written, the certificate not: no listener can load this pair
    writeFileSync(opts.keyFile, selfSignedCertificate(HOST).key);
    assert.equal(await issuer.check(), 'issued');
    const cert = new X509Certificate(readFileSync(opts.certFile));
    assert.ok(cert.checkPrivateKey(createPrivateKey(readFileSync(opts.keyFile))), 'a matching pair');
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.endsWith('.tmp')),
      [],
      'no temporary file left',
    );
  },
);

test(
  'the HTTP listener answers only known challenge tokens and sends everything else to HTTPS',
  { timeout: 10_000 },
  async () => {
    const port = (challenges.address() as AddressInfo).port;
    const get = (path: string) =>
      new Promise<{ status: number; location?: string | undefined }>((resolve, reject) =>
        request({ host: '127.0.0.1', port, path }, (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, location: res.headers.location });
        })
          .on('error', reject)
          .end(),
      );
    await r.redis.set('acme:http-01:tok_1', 'tok_1.thumb');
    assert.equal((await get('/.well-known/acme-challenge/tok_1')).status, 200);
    assert.equal((await get('/.well-known/acme-challenge/unknown')).status, 404);
    assert.equal((await get('/.well-known/acme-challenge/..%2Fetc')).status, 404);
    assert.deepEqual(await get('/inbox?x=1'), { status: 301, location: `https://${HOST}/inbox` });
  },
);

test(
  'a CA that accepts and never answers: the check fails in time and frees the lock',
  { timeout: 60_000 },
  async () => {
    const mute = createHttpServer(() => undefined);
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    try {
      const issuer = createAcmeIssuer(
        options({
          directoryUrl: `http://127.0.0.1:${(mute.address() as AddressInfo).port}/dir`,
          caFile: undefined,
          certFile: join(dir, 'mute-fullchain.pem'),
          keyFile: join(dir, 'mute-privkey.pem'),
          requestTimeoutMs: 1000,
        }),
        { redis: r.redis, logger: quiet },
      );
      const started = Date.now();
      await assert.rejects(issuer.check(), /no response from the ACME CA \(no answer within 1000 ms/);
      assert.ok(Date.now() - started < 20_000, `failed after ${Date.now() - started} ms`);
      // the lock is free again for the next try
      assert.equal(await r.redis.get('acme:lock'), null);
    } finally {
      mute.closeAllConnections();
      mute.close();
    }
  },
);
