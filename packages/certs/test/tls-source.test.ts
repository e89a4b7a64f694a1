import assert from 'node:assert/strict';
import { utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { selfSignedCertificate } from '@mailyard/config';
import { tempDir, waitFor } from '@mailyard/testkit';
import { createTlsSource, tlsSourceFromConfig } from '../src/index.js';

/** A good pair in a directory of its own, watched every 20 ms; warnings are kept. */
function watchedPair() {
  const dir = tempDir();
  const certFile = join(dir.path, 'cert.pem');
  const keyFile = join(dir.path, 'key.pem');
  const first = selfSignedCertificate('mx.example.test');
  writeFileSync(certFile, first.cert);
  writeFileSync(keyFile, first.key);
  const warnings: string[] = [];
  const source = createTlsSource({
    certFile,
    keyFile,
    hostname: 'mx.example.test',
    reloadInterval: 20,
    logger: { info: () => undefined, warn: (_o, msg) => warnings.push(msg) },
  });
  return { dir, certFile, keyFile, first, warnings, source };
}

test(
  'a key that does not match the new certificate leaves the old pair in force, and says so',
  { timeout: 20_000 },
  async () => {
    const { dir, certFile, keyFile, first, warnings, source } = watchedPair();
    try {
      writeFileSync(certFile, selfSignedCertificate('mx.example.test').cert);
      await waitFor(() => warnings.length > 0, { what: 'the refusal logged' });
      assert.match(warnings[0]!, /previous certificate stays in use/);
      assert.equal(String(source.current().cert), first.cert);
      // the matching key arrives: taken
      const second = selfSignedCertificate('mx.example.test');
      writeFileSync(keyFile, second.key);
      writeFileSync(certFile, second.cert);
      await waitFor(() => String(source.current().cert) === second.cert, { what: 'the new pair' });
    } finally {
      source.close();
      dir.cleanup();
    }
  },
);

test(
  'a pair refused, then fixed without a change of size or time (a chmod, a chown), is taken',
  { timeout: 20_000 },
  async () => {
    const { dir, certFile, keyFile, first, warnings, source } = watchedPair();
    try {
      // a key that cannot be used (as one unreadable by its mode would be, which root
      // reads all the same), then the same file made usable: size and mtime as they were
      const second = selfSignedCertificate('mx.example.test');
      const at = Math.floor(Date.now() / 1000) - 60;
      writeFileSync(keyFile, second.key.replaceAll('PRIVATE', 'PRIVATF'));
      utimesSync(keyFile, at, at);
      writeFileSync(certFile, second.cert);
      await waitFor(() => warnings.length > 0, { what: 'the refusal logged' });
      assert.equal(String(source.current().cert), first.cert);
      writeFileSync(keyFile, second.key);
      utimesSync(keyFile, at, at);
      await waitFor(() => String(source.current().cert) === second.cert, { what: 'the fixed pair' });
    } finally {
      source.close();
      dir.cleanup();
    }
  },
);

test(
  'files the ACME issuer writes that do not load at start: self-signed until a good pair is written',
  { timeout: 20_000 },
  async () => {
    const dir = tempDir();
    const certFile = join(dir.path, 'cert.pem');
    const keyFile = join(dir.path, 'key.pem');
    // a renewal that stopped after the key: the key is not the certificate's
    writeFileSync(certFile, selfSignedCertificate('mx.example.test').cert);
    writeFileSync(keyFile, selfSignedCertificate('mx.example.test').key);
    const warnings: string[] = [];
    const logger = { info: () => undefined, warn: (_o: object, msg: string) => warnings.push(msg) };
    assert.throws(
      () => createTlsSource({ certFile, keyFile, hostname: 'mx.example.test', reloadInterval: 0, logger }),
      /TLS_KEY_FILE: the key in .* is not the key of the certificate in /,
      "files of the administrator's own are still an error",
    );
    const source = createTlsSource({
      certFile,
      keyFile,
      hostname: 'mx.example.test',
      reloadInterval: 20,
      waitForFiles: true,
      logger,
    });
    try {
      assert.equal(source.current().selfSigned, true);
      assert.match(warnings[0]!, /self-signed certificate is used/);
      const good = selfSignedCertificate('mx.example.test');
      writeFileSync(keyFile, good.key);
      writeFileSync(certFile, good.cert);
      await waitFor(() => String(source.current().cert) === good.cert, { what: 'the good pair' });
    } finally {
      source.close();
      dir.cleanup();
    }
  },
);

test('configuration errors name the key', { timeout: 10_000 }, () => {
  const logger = { info: () => undefined, warn: () => undefined };
  const base = { tls_reload_interval: 0, myhostname: 'mx.example.test' };
  assert.throws(
    () => tlsSourceFromConfig({ ...base, acme_enabled: true }, logger, 'msa'),
    /^ConfigError: TLS_CERT_FILE: with ACME_ENABLED/,
  );
  assert.throws(
    () =>
      tlsSourceFromConfig(
        {
          ...base,
          acme_enabled: false,
          tls_cert_file: '/nonexistent/cert.pem',
          tls_key_file: '/nonexistent/key.pem',
        },
        logger,
        'msa',
      ),
    /^ConfigError: TLS_CERT_FILE: cannot read \/nonexistent\/cert\.pem: ENOENT/,
  );
  // with ACME the files may not exist yet: a self-signed pair until they do
  const s = tlsSourceFromConfig(
    {
      ...base,
      acme_enabled: true,
      tls_cert_file: '/nonexistent/cert.pem',
      tls_key_file: '/nonexistent/key.pem',
    },
    logger,
    'msa',
  );
  assert.equal(s.current().selfSigned, true);
  s.close();
});
