import { createPrivateKey, generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import selfsigned from 'selfsigned';
import { ConfigError } from './config-error.js';

/**
 * Reads the TLS_CERT_FILE/TLS_KEY_FILE pair and checks that it loads: a PEM certificate, a
 * PEM private key without a passphrase, and the key of that certificate. Every problem is
 * thrown at once as a ConfigError naming the key, so `--check-config` and the start of a
 * service report a bad file as they report a bad value.
 */
export function readTlsPair(certFile: string, keyFile: string): { cert: Buffer; key: Buffer } {
  const problems: string[] = [];
  const read = (file: string, key: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      problems.push(`${key}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      return null;
    }
  };
  const cert = read(certFile, 'TLS_CERT_FILE');
  const key = read(keyFile, 'TLS_KEY_FILE');
  let x509: X509Certificate | null = null;
  let privateKey: KeyObject | null = null;
  if (cert)
    try {
      x509 = new X509Certificate(cert);
    } catch {
      problems.push(`TLS_CERT_FILE: ${certFile} holds no PEM certificate`);
    }
  if (key)
    try {
      privateKey = createPrivateKey(key);
    } catch {
      problems.push(`TLS_KEY_FILE: ${keyFile} holds no PEM private key (or one with a passphrase)`);
    }
  if (x509 && privateKey && !x509.checkPrivateKey(privateKey))
    problems.push(`TLS_KEY_FILE: the key in ${keyFile} is not the key of the certificate in ${certFile}`);
  if (problems.length) throw new ConfigError(problems);
  try {
    createSecureContext({ key: key!, cert: cert! });
  } catch (err) {
    throw new ConfigError([`TLS_CERT_FILE: ${certFile} does not load: ${(err as Error).message}`]);
  }
  return { cert: cert!, key: key! };
}

export function selfSignedCertificate(hostname: string): { key: string; cert: string } {
  // node-forge now and then encodes a certificate OpenSSL refuses ("illegal padding" in
  // its DER): such a one is made again, so no service fails to start on it
  for (let attempt = 1; ; attempt++) {
    const pems = generateSelfSigned(hostname);
    try {
      createSecureContext(pems);
      return pems;
    } catch (err) {
      if (attempt >= 5) throw err;
    }
  }
}

function generateSelfSigned(hostname: string): { key: string; cert: string } {
  // node's native key generation is fast; selfsigned (node-forge) only signs
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const pems = selfsigned.generate([{ name: 'commonName', value: hostname }], {
    keyPair: { privateKey, publicKey },
    days: 825,
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: hostname }] }],
  } as never);
  return { key: pems.private, cert: pems.cert };
}
