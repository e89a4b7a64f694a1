import { domainToASCII } from 'node:url';
import { ipToBigInt, parseCidr } from '@mailyard/config';

/**
 * Access tables (Postfix access(5) style), kept as Redis hashes: key → action.
 * Keys are an IP address or CIDR network (client tables), or an address, a domain
 * (matching its subdomains too) or `local@` (sender/recipient tables).
 */
export type AccessAction =
  | { kind: 'permit' }
  | { kind: 'dunno' }
  | { kind: 'reject'; code: number; enhanced: string; text: string | null }
  | { kind: 'defer'; code: number; enhanced: string; text: string | null }
  | { kind: 'discard' }
  | { kind: 'hold' };

/** An access table refusal, one sentence: a bad key or action (`invalid`), or an entry that is not there. */
export class AccessError extends Error {
  override readonly name = 'AccessError';
  constructor(
    message: string,
    readonly code: 'invalid' | 'not_found' = 'invalid',
  ) {
    super(message);
  }
}

/** Parses OK, DUNNO, REJECT [text], DEFER [text], DISCARD, HOLD, or "NNN [X.Y.Z] text". */
export function parseAccessAction(text: string): AccessAction {
  const t = text.trim();
  const [word = '', ...rest] = t.split(/\s+/);
  const tail = rest.join(' ') || null;
  switch (word.toUpperCase()) {
    case 'OK':
    case 'PERMIT':
      return { kind: 'permit' };
    case 'DUNNO':
      return { kind: 'dunno' };
    case 'REJECT':
      return { kind: 'reject', code: 554, enhanced: '5.7.1', text: tail };
    case 'DEFER':
    case 'TEMPFAIL':
      return { kind: 'defer', code: 450, enhanced: '4.7.1', text: tail };
    case 'DISCARD':
      return { kind: 'discard' };
    case 'HOLD':
    case 'JUNK':
      return { kind: 'hold' };
    default:
      break;
  }
  const m = /^([45])(\d\d)(?:\s+([45]\.\d{1,3}\.\d{1,3}))?(?:\s+(.*))?$/.exec(t);
  if (m) {
    const code = Number(m[1]! + m[2]!);
    const enhanced = m[3] ?? `${m[1]}.7.1`;
    if (m[3] && m[3][0] !== m[1])
      throw new AccessError(`enhanced status ${m[3]} does not match code ${code}`);
    return m[1] === '5'
      ? { kind: 'reject', code, enhanced, text: m[4] ?? null }
      : { kind: 'defer', code, enhanced, text: m[4] ?? null };
  }
  throw new AccessError(
    `unknown access action "${word}" (OK, DUNNO, REJECT text, DEFER text, DISCARD, HOLD or "550 5.7.1 text")`,
  );
}

/** Normalises a client-table key: an IP or a CIDR network in canonical form. */
export function normalizeClientKey(key: string): string {
  const c = parseCidr(key.trim());
  if (!c) throw new AccessError(`"${key}" is not an IP address or CIDR network`);
  return `${formatNet(c.family, c.base)}/${c.prefix}`;
}

function formatNet(family: 4 | 6, v: bigint): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 255n)).join('.');
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((v >> BigInt(i * 16)) & 0xffffn).toString(16));
  return groups.join(':');
}

/** Keys to look up for a client IP, most specific first: every network that contains it. */
export function clientKeys(ip: string): string[] {
  const a = ipToBigInt(ip);
  if (!a) return [];
  const max = a.family === 4 ? 32 : 128;
  const min = a.family === 4 ? 8 : 16;
  const keys: string[] = [];
  for (let p = max; p >= min; p--) {
    const shift = BigInt(max - p);
    keys.push(`${formatNet(a.family, (a.value >> shift) << shift)}/${p}`);
  }
  return keys;
}

/**
 * An internationalized domain in its A-labels (`müller.test` → `xn--mller-kva.test`), as
 * DNS, the intake's routing and the lookups (addressKeys) have it; anything else as given.
 */
function aLabels(domain: string): string {
  return /^[\x00-\x7f]*$/.test(domain) ? domain : domainToASCII(domain) || domain;
}

/** Normalises an address-table key: lower-case address, domain or `local@`, domains in A-labels. */
export function normalizeAddressKey(key: string): string {
  const k = key.trim().toLowerCase().replace(/^\./, '');
  if (!k || /\s/.test(k)) throw new AccessError(`"${key}" is not an address, domain or local@`);
  const at = k.lastIndexOf('@');
  return at === -1 ? aLabels(k) : `${k.slice(0, at + 1)}${aLabels(k.slice(at + 1))}`;
}

/**
 * Keys for an address, most specific first, in the order of Postfix's access(5): the
 * address, the domain and its parent domains, `local@`; `<>` for the null sender. With
 * a recipient `delimiter` and an address that has an extension (`user+foo@domain`):
 * `user+foo@domain`, `user@domain`, the domains, `user+foo@`, `user@`, so an entry for
 * an address holds for its plus-addresses too.
 */
export function addressKeys(address: string, delimiter?: string): string[] {
  const lower = address.toLowerCase();
  if (lower === '') return ['<>'];
  const at = lower.lastIndexOf('@');
  if (at === -1) return [lower];
  const local = lower.slice(0, at);
  // a domain written in U-labels matches entries in A-labels (normalizeAddressKey)
  const domain = aLabels(lower.slice(at + 1));
  const a = `${local}@${domain}`;
  const base = baseLocalPart(local, delimiter);
  const keys = [a];
  if (base !== local) keys.push(`${base}@${domain}`);
  const labels = domain.split('.');
  for (let i = 0; i < labels.length - 1; i++) keys.push(labels.slice(i).join('.'));
  keys.push(`${local}@`);
  if (base !== local) keys.push(`${base}@`);
  return keys;
}

/** `user` of `user+foo` (the first `delimiter` past the first character), else the local part. */
export function baseLocalPart(local: string, delimiter?: string): string {
  const i = delimiter ? local.indexOf(delimiter) : -1;
  return i > 0 ? local.slice(0, i) : local;
}
