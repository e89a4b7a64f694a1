import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { selfSignedCertificate } from '@mailyard/config';
import { RawSmtp, tempDir, waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';

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
      tls_reload_interval: '100ms',
      smtpd_timeout: '2s',
    },
  });
});
after(async () => {
  await p.close();
  dir.cleanup();
});

/** A session upgraded with STARTTLS. */
async function startTls() {
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
  return tls;
}

/** The server's answer to `line`; rejects when the session ends first. */
const ask = (tls: TLSSocket, line: string) =>
  new Promise<string>((resolve, reject) => {
    const ended = () => reject(new Error(`the session ended before answering ${line}`));
    tls.once('close', ended);
    tls.once('data', (d: Buffer) => {
      tls.off('close', ended);
      resolve(d.toString());
    });
    tls.write(`${line}\r\n`);
  });

test('STARTTLS presents the configured certificate, TLS 1.2 or later', async () => {
  const tls = await startTls();
  const peer = tls.getPeerX509Certificate();
  assert.ok(peer);
  assert.equal(peer.fingerprint256, new X509Certificate(pair.cert).fingerprint256);
  assert.match(tls.getProtocol() ?? '', /^TLSv1\.[23]$/);
  tls.destroy();
});

test(
  'a certificate file replaced while running is served to the next STARTTLS; an open session keeps its own',
  { timeout: 30_000 },
  async () => {
    // made first: a key pair takes a while on a busy machine, and the open session must
    // not sit idle past smtpd_timeout meanwhile
    const renewed = selfSignedCertificate('mx.configured.test');
    const old = await startTls();
    // as certbot or the ACME issuer do: the new files are renamed into place
    writeFileSync(join(dir.path, 'key.new'), renewed.key);
    writeFileSync(join(dir.path, 'cert.new'), renewed.cert);
    renameSync(join(dir.path, 'key.new'), join(dir.path, 'key.pem'));
    renameSync(join(dir.path, 'cert.new'), join(dir.path, 'cert.pem'));
    const want = new X509Certificate(renewed.cert).fingerprint256;
    const next = await waitFor(
      async () => {
        // the open session is kept busy while the new certificate is awaited
        assert.match(await ask(old, 'NOOP'), /^250 /);
        const tls = await startTls();
        if (tls.getPeerX509Certificate()?.fingerprint256 === want) return tls;
        tls.destroy();
        return null;
      },
      { timeoutMs: 10_000, what: 'the new certificate on STARTTLS' },
    );
    assert.match(await ask(old, 'EHLO client.example.net'), /^250[- ]/);
    assert.equal(old.getPeerX509Certificate()?.fingerprint256, new X509Certificate(pair.cert).fingerprint256);
    for (const s of [old, next]) s.destroy();
  },
);

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

/** Writes `text` a byte every `everyMs` until it is all sent or the server closed; returns the bytes sent. */
async function trickle(c: RawSmtp, text: string, everyMs: number): Promise<number> {
  let sent = 0;
  while (sent < text.length && !c.closed) {
    c.write(text[sent++]!);
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return sent;
}

test(
  'a command line trickled a byte at a time is cut at the deadline, not kept alive by each byte',
  { timeout: 30_000 },
  async () => {
    const c = await RawSmtp.connect(p.inbound.port);
    await c.read();
    const line = `EHLO ${'slow'.repeat(20)}.example.net\r\n`;
    const [sent, r] = await Promise.all([trickle(c, line, 100), c.read(20_000)]);
    assert.equal(r.text, '421 4.4.2 Error: timeout exceeded');
    assert.ok(sent < line.length, `the whole line went through (${sent} bytes)`);
    await c.waitClosed();
  },
);

test(
  'a message trickled a byte at a time is cut at the deadline (smtpd_min_data_rate)',
  { timeout: 30_000 },
  async () => {
    await addAccount(p.directory, 'trickle@example.test');
    const c = await RawSmtp.connect(p.inbound.port);
    await c.read();
    assert.equal((await c.cmd('EHLO client.example.net')).code, 250);
    assert.equal((await c.cmd('MAIL FROM:<sender@remote.example>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<trickle@example.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    const message = `Subject: slow\r\n\r\n${'x'.repeat(200)}\r\n.\r\n`;
    const [sent, r] = await Promise.all([trickle(c, message, 100), c.read(20_000)]);
    assert.equal(r.text, '421 4.4.2 Error: timeout exceeded');
    assert.ok(sent < message.length, `the whole message went through (${sent} bytes)`);
    await c.waitClosed();
  },
);

test('a message sent at a normal rate is not cut by the deadline', { timeout: 30_000 }, async () => {
  await addAccount(p.directory, 'fast@example.test');
  const c = await RawSmtp.connect(p.inbound.port);
  await c.read();
  await c.cmd('EHLO client.example.net');
  await c.cmd('MAIL FROM:<sender@remote.example>');
  assert.equal((await c.cmd('RCPT TO:<fast@example.test>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  const line = `${'y'.repeat(998)}\r\n`;
  c.write(`Subject: big\r\n\r\n${line.repeat(2000)}.\r\n`);
  assert.match((await c.read(20_000)).text, /^250 /);
  c.close();
});
