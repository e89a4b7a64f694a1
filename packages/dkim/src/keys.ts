import { createPrivateKey, generateKeyPairSync } from 'node:crypto';

export type DkimAlgorithm = 'rsa' | 'ed25519';
export const DKIM_ALGORITHMS: readonly DkimAlgorithm[] = ['rsa', 'ed25519'];

/** A DKIM key pair as stored: PEM private key, and the public key as it goes into DNS (p=). */
export interface DkimKey {
  algorithm: DkimAlgorithm;
  /** PKCS#8 PEM. */
  privateKey: string;
  /** Base64 for the p= tag: SubjectPublicKeyInfo for RSA (RFC 6376 §3.6.1), the raw 32 bytes for Ed25519 (RFC 8463 §4.2). */
  publicKey: string;
  /** ISO 8601. */
  created: string;
}

/** RSA below 2048 bits is weak, and receivers increasingly refuse 1024 (RFC 8301 §3.2: at least 1024, 2048 recommended). */
export const MIN_RSA_BITS = 2048;
export const MAX_RSA_BITS = 4096;

export function generateDkimKey(algorithm: DkimAlgorithm, rsaBits = MIN_RSA_BITS): DkimKey {
  const created = new Date().toISOString();
  if (algorithm === 'rsa') {
    if (!Number.isInteger(rsaBits) || rsaBits < MIN_RSA_BITS || rsaBits > MAX_RSA_BITS) {
      throw new DkimError(`RSA key size must be between ${MIN_RSA_BITS} and ${MAX_RSA_BITS} bits`);
    }
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: rsaBits });
    return {
      algorithm,
      privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      publicKey: publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
      created,
    };
  }
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    algorithm,
    privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKey: rawEd25519(publicKey.export({ type: 'spki', format: 'der' })).toString('base64'),
    created,
  };
}

// An Ed25519 SubjectPublicKeyInfo is a fixed 12-byte prefix followed by the 32-byte key.
function rawEd25519(spki: Buffer): Buffer {
  return spki.subarray(spki.length - 32);
}

/** Checks that a stored private key parses and matches its algorithm (a corrupt entry must not stop signing with the others). */
export function checkPrivateKey(key: Pick<DkimKey, 'algorithm' | 'privateKey'>): boolean {
  try {
    const k = createPrivateKey(key.privateKey);
    return k.asymmetricKeyType === key.algorithm;
  } catch {
    return false;
  }
}

export interface DkimDnsRecord {
  /** `<selector>._domainkey.<domain>` */
  name: string;
  /** The TXT value, e.g. `v=DKIM1; k=rsa; p=MIIB...` */
  value: string;
  /** A zone-file line, the value split in quoted strings of at most 255 bytes (RFC 1035 §3.3.14). */
  zoneLine: string;
}

export function dnsRecord(domain: string, selector: string, key: Pick<DkimKey, 'algorithm' | 'publicKey'>) {
  const name = `${selector}._domainkey.${domain}`;
  const value = `v=DKIM1; k=${key.algorithm}; p=${key.publicKey}`;
  const chunks: string[] = [];
  for (let i = 0; i < value.length; i += 255) chunks.push(`"${value.slice(i, i + 255)}"`);
  const zoneLine = `${name}. IN TXT ( ${chunks.join(' ')} )`;
  return { name, value, zoneLine } satisfies DkimDnsRecord;
}

/** A DKIM operation refused for a reason the operator can fix; the message is one sentence. */
export class DkimError extends Error {
  override readonly name = 'DkimError';
  constructor(
    message: string,
    /** `not_local`: a key refused because its domain is not (or no longer) a local domain. */
    readonly code: 'invalid' | 'not_local' = 'invalid',
  ) {
    super(message);
  }
}
