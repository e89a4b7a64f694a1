import { checkPrivateKey } from './keys.js';
import type { DkimKeyStore, StoredDkimKey } from './store.js';

export interface DkimSignature {
  domain: string;
  selector: string;
  algorithm: 'rsa-sha256' | 'ed25519-sha256';
}

export interface SignResult {
  /** DKIM-Signature header fields (CRLF-terminated) to prepend to the message; '' when not signed. */
  headers: string;
  signatures: DkimSignature[];
  /** Keys that could not be used (corrupt entry, signing error), for the log. */
  errors: string[];
}

export interface DkimSignerOptions {
  /** How long a domain's keys are cached; keys added with the CLI are used after at most this long. */
  cacheMs?: number;
}

/**
 * Signs outgoing mail with every signing key of the author's domain (relaxed/relaxed,
 * SHA-256; rsa-sha256 and ed25519-sha256). Keys are read from the store and cached
 * briefly, so a key added with `mailyard dkim generate` is picked up without a restart.
 */
export class DkimSigner {
  private cache = new Map<string, { at: number; keys: StoredDkimKey[] }>();
  private readonly cacheMs: number;

  constructor(
    private readonly store: DkimKeyStore,
    opts: DkimSignerOptions = {},
  ) {
    this.cacheMs = opts.cacheMs ?? 30_000;
  }

  private async keysFor(domain: string): Promise<StoredDkimKey[]> {
    const hit = this.cache.get(domain);
    if (hit && Date.now() - hit.at < this.cacheMs) return hit.keys;
    let keys: StoredDkimKey[];
    try {
      keys = await this.store.signingKeys(domain);
    } catch (err) {
      throw new DkimKeysUnavailableError(domain, err);
    }
    this.cache.set(domain, { at: Date.now(), keys });
    return keys;
  }

  /**
   * Whether `sign` would sign for `domain`: it has a key that can be used. Throws
   * `DkimKeysUnavailableError` as `sign` does.
   */
  async hasKeys(domain: string): Promise<boolean> {
    return (await this.keysFor(domain.toLowerCase())).some((k) => checkPrivateKey(k));
  }

  /**
   * Signs `message` (complete RFC 5322 bytes, CRLF line endings) for `domain` (d=).
   * Throws `DkimKeysUnavailableError` when the key store cannot say which keys the domain
   * has: the caller must not send the message unsigned then, since a domain with keys
   * (and a DMARC policy) would have its mail rejected by receivers.
   */
  async sign(message: Buffer, domain: string, signTime = new Date()): Promise<SignResult> {
    const errors: string[] = [];
    const keys = (await this.keysFor(domain.toLowerCase())).filter((k) => {
      if (checkPrivateKey(k)) return true;
      errors.push(
        `DKIM key ${k.selector}._domainkey.${k.domain} is unusable (not a valid ${k.algorithm} private key)`,
      );
      return false;
    });
    if (!keys.length) return { headers: '', signatures: [], errors };
    const signatures: DkimSignature[] = keys.map((k) => ({
      domain: k.domain,
      selector: k.selector,
      algorithm: k.algorithm === 'rsa' ? 'rsa-sha256' : 'ed25519-sha256',
    }));
    // loaded at the first signature: most of what a process that never signs (the CLI, a
    // service's --check-config) would otherwise spend starting up
    const { dkimSign } = await import('mailauth/lib/dkim/sign.js');
    const res = await dkimSign(message, {
      canonicalization: 'relaxed/relaxed',
      headerList: SIGNED_FIELDS,
      signTime,
      signingDomain: domain,
      selector: keys[0]!.selector,
      privateKey: keys[0]!.privateKey,
      signatureData: keys.map((k, i) => ({
        signingDomain: k.domain,
        selector: k.selector,
        privateKey: k.privateKey,
        algorithm: signatures[i]!.algorithm,
        canonicalization: 'relaxed/relaxed',
      })),
    });
    for (const e of res.errors ?? []) errors.push(e instanceof Error ? e.message : String(e));
    const headers = res.signatures.trim() ? res.signatures.replace(/^(?:\r\n)+/, '') : '';
    // report what was actually signed: a key the library refused leaves no header
    const made = signatures.filter((sig) =>
      new RegExp(`\\bs=${sig.selector.replace(/[.-]/g, '\\$&')};`).test(headers.replace(/\r\n[ \t]+/g, ' ')),
    );
    return { headers, signatures: made, errors };
  }
}

/**
 * The header fields signed. `(o)` signs a field once more than it
 * occurs, so a field of that name added in transit breaks the signature (RFC 6376 §8.15):
 * a second From or Subject shown by a reader in place of ours, a Reply-To or Cc slipped into
 * a message that had none. `(x)` does so only where the field occurs. The set is rspamd's
 * default; the rest are signed as they occur, so a mailing list may still add its own.
 */
const SIGNED_FIELDS = [
  '(o)from',
  '(x)sender',
  '(o)reply-to',
  '(o)subject',
  '(x)date',
  '(x)message-id',
  '(o)to',
  '(o)cc',
  '(x)mime-version',
  '(x)content-type',
  '(x)content-transfer-encoding',
  'content-id',
  'content-description',
  'resent-date',
  'resent-from',
  'resent-sender',
  'resent-to',
  'resent-cc',
  'resent-message-id',
  '(x)in-reply-to',
  '(x)references',
  'list-id',
  'list-help',
  'list-unsubscribe',
  'list-unsubscribe-post',
  'list-subscribe',
  'list-post',
  'list-owner',
  'list-archive',
  'bimi-selector',
];

/**
 * The key store failed (Redis down, a timeout): whether the domain has keys is unknown,
 * so the message can be neither signed nor sent unsigned. A temporary failure.
 */
export class DkimKeysUnavailableError extends Error {
  override readonly name = 'DkimKeysUnavailableError';
  constructor(
    readonly domain: string,
    cause: unknown,
  ) {
    super(`the DKIM keys of ${domain} could not be read`, { cause });
  }
}
