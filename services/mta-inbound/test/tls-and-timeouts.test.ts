import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { selfSignedCertificate } from '@mailyard/config';
import { RawSmtp, tempDir } from '@mailyard/testkit';
import { startPlatform, type Platform } from '../../../test/harness.js';

let p: Platform;
const dir = tempDir();
const pair = selfSignedCertificate('mx.configured.test');

before(async () => {
  writeFileSync(join(dir.path, 'cert.pem'), pair.cert);
  writeFileSync(join(dir.path, 'key.pem'), pair.key);
  p = await startPlatform({
    withDelivery: false,
    inbound: {
      tls_cert_file: join(dir.path, 'cert.pem'),
      tls_key_file: join(dir.path, 'key.pem'),
      smtpd_timeout: '1s',
    },
  });
});
after(async () => {
  await p.close();
  dir.cleanup();
});

test('STARTTLS presents the configured certificate, TLS 1.2 or later', async () => {
  const c = await RawSmtp.connect(p.inbound.port);
  await c.read();
  await c.cmd('EHLO client.example.net');
  assert.equal((await c.cmd('STARTTLS')).code, 220);
  const socket = c.socket;
  socket.removeAllListeners('data');
  const tls = tlsConnect({ socket, rejectUnauthorized: false, servername: 'mx.configured.test' });
  await new Promise<void>((resolve, reject) => {
    tls.once('secureConnect', () => resolve());
    tls.once('error', reject);
  });
  const peer = tls.getPeerX509Certificate();
  assert.ok(peer);
  assert.equal(peer.fingerprint256, new X509Certificate(pair.cert).fingerprint256);
  assert.match(tls.getProtocol() ?? '', /^TLSv1\.[23]$/);
  tls.destroy();
});

test('TLS 1.1 is refused', async () => {
  const c = await RawSmtp.connect(p.inbound.port);
  await c.read();
  await c.cmd('EHLO client.example.net');
  await c.cmd('STARTTLS');
  c.socket.removeAllListeners('data');
  const tls = tlsConnect({
    socket: c.socket,
    rejectUnauthorized: false,
    maxVersion: 'TLSv1.1',
    minVersion: 'TLSv1',
  });
  await assert.rejects(
    new Promise<void>((resolve, reject) => {
      tls.once('secureConnect', () => resolve());
      tls.once('error', reject);
    }),
  );
  tls.destroy();
});

test('an idle session is closed after smtpd_timeout with 421', async () => {
  const c = await RawSmtp.connect(p.inbound.port);
  await c.read();
  const r = await c.read(5000);
  assert.match(r.text, /^421 /);
  await c.waitClosed();
});
