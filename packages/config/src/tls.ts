import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import selfsigned from 'selfsigned';

export interface TlsMaterial {
  key: Buffer | string;
  cert: Buffer | string;
  selfSigned: boolean;
}

/**
 * Certificate and key from the configured files; when none are configured, a
 * self-signed certificate for `hostname`, generated at start (fine for development,
 * and for port 25, where senders rarely verify; the caller logs a warning).
 */
export function loadTlsMaterial(opts: {
  certFile?: string | undefined;
  keyFile?: string | undefined;
  hostname: string;
}): TlsMaterial {
  if (opts.certFile || opts.keyFile) {
    if (!opts.certFile || !opts.keyFile) {
      throw new Error(
        `${opts.certFile ? 'TLS_KEY_FILE' : 'TLS_CERT_FILE'}: both TLS_CERT_FILE and TLS_KEY_FILE must be set`,
      );
    }
    const read = (file: string, key: string) => {
      try {
        return readFileSync(file);
      } catch (err) {
        throw new Error(`${key}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
    };
    return {
      cert: read(opts.certFile, 'TLS_CERT_FILE'),
      key: read(opts.keyFile, 'TLS_KEY_FILE'),
      selfSigned: false,
    };
  }
  return { ...selfSignedCertificate(opts.hostname), selfSigned: true };
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
