import { domainToASCII } from 'node:url';
import { isIP } from 'node:net';

export interface MailAddress {
  local: string;
  /** Lower-case, ASCII (IDNA) form of the domain, or an address literal like `[192.0.2.1]`. */
  domain: string;
  /** local@domain, domain normalized. */
  address: string;
}

export type AddressCheck =
  { ok: true; value: MailAddress } | { ok: false; kind: 'syntax' | 'relay_trick'; detail: string };

// RFC 5321 §4.1.2 dot-string atoms (plus UTF-8 for SMTPUTF8, RFC 6531 §3.3)
const ATOM = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\uFFFF-]+$/u;
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** Canonical lower-case ASCII form of a domain, or null if it is not a valid host name. */
export function normalizeDomain(domain: string): string | null {
  if (!domain || domain.length > 253) return null;
  const ascii = domainToASCII(domain.replace(/\.$/, '').toLowerCase());
  if (!ascii) return null;
  const labels = ascii.split('.');
  if (labels.some((l) => !LABEL.test(l))) return null;
  return ascii;
}

/** The domain of an address already accepted (after the last `@`), normalized when it can be. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  const d = at === -1 ? '' : address.slice(at + 1);
  return normalizeDomain(d) ?? d.toLowerCase();
}

/**
 * Parses a forward- or reverse-path address as given in RCPT TO / MAIL FROM and
 * refuses the classic tricks that make a naive server relay (Postfix's
 * allow_percent_hack=no, allow_untrusted_routing=no, swap_bangpath=no):
 *   `@ourdomain:user@other` (source route), `user%other@ourdomain` (percent hack),
 *   `"user@other"@ourdomain` (quoted @), `other!user@ourdomain` (bang path),
 *   `user@other@ourdomain` (several @).
 */
export function parseMailAddress(raw: string): AddressCheck {
  const text = raw.trim();
  if (!text) return { ok: false, kind: 'syntax', detail: 'empty address' };
  if (text.length > 320) return { ok: false, kind: 'syntax', detail: 'address too long' };
  // RFC 5321 §4.1.2 / Appendix C: source routes; we never honour them.
  if (text.startsWith('@')) return { ok: false, kind: 'relay_trick', detail: 'source route' };
  if (/[\x00-\x1f\x7f\s<>]/.test(text))
    return { ok: false, kind: 'syntax', detail: 'control character or space' };

  let local: string;
  let rest: string;
  if (text.startsWith('"')) {
    // quoted-string local part: find the closing quote, honouring backslash escapes
    let i = 1;
    let content = '';
    for (; i < text.length; i++) {
      const c = text[i]!;
      if (c === '\\') {
        content += text[i + 1] ?? '';
        i++;
      } else if (c === '"') break;
      else content += c;
    }
    if (i >= text.length) return { ok: false, kind: 'syntax', detail: 'unterminated quoted local part' };
    if (/[@%!]/.test(content))
      return { ok: false, kind: 'relay_trick', detail: 'routing character in quoted local part' };
    // RFC 5321 §4.1.2: a quoted string that needs no quotes is the same mailbox as the
    // dot-atom it holds (`"user"@d` is `user@d`), as Postfix reads it
    local =
      content && content.length <= 64 && content.split('.').every((a) => ATOM.test(a))
        ? content
        : text.slice(0, i + 1);
    rest = text.slice(i + 1);
    if (!rest.startsWith('@')) return { ok: false, kind: 'syntax', detail: 'missing @domain' };
    rest = rest.slice(1);
  } else {
    const at = text.indexOf('@');
    if (at === -1) return { ok: false, kind: 'syntax', detail: 'missing @domain' };
    if (text.indexOf('@', at + 1) !== -1)
      return { ok: false, kind: 'relay_trick', detail: 'several @ in address' };
    local = text.slice(0, at);
    rest = text.slice(at + 1);
    if (local.includes('%')) return { ok: false, kind: 'relay_trick', detail: 'percent hack' };
    if (local.includes('!')) return { ok: false, kind: 'relay_trick', detail: 'bang path' };
    if (!local || local.length > 64) return { ok: false, kind: 'syntax', detail: 'bad local part length' };
    if (local.split('.').some((atom) => !ATOM.test(atom)))
      return { ok: false, kind: 'syntax', detail: 'bad local part' };
  }
  let domain: string | null;
  if (rest.startsWith('[') && rest.endsWith(']')) {
    domain = addressLiteral(rest) ? rest : null;
  } else {
    domain = normalizeDomain(rest);
  }
  if (!domain) return { ok: false, kind: 'syntax', detail: 'bad domain' };
  return { ok: true, value: { local, domain, address: `${local}@${domain}` } };
}

/**
 * The address an address literal names, or null: `[192.0.2.1]`, or `[IPv6:2001:db8::1]`
 * with its tag (RFC 5321 §4.1.3); `[::1]` and `[IPv6:192.0.2.1]` are neither (Postfix
 * refuses them too).
 */
export function addressLiteral(domain: string): { ip: string; family: 'ipv4' | 'ipv6' } | null {
  const m = /^\[(ipv6:)?([^\]]+)\]$/i.exec(domain);
  if (!m) return null;
  const family = isIP(m[2]!);
  if (m[1] ? family !== 6 : family !== 4) return null;
  return { ip: m[2]!, family: family === 6 ? 'ipv6' : 'ipv4' };
}

/** Splits `user+tag` at the first recipient delimiter (Postfix: recipient_delimiter). */
export function splitPlus(local: string, delimiter = '+'): { base: string; tag: string | null } {
  const i = local.indexOf(delimiter);
  if (i <= 0) return { base: local, tag: null };
  return { base: local.slice(0, i), tag: local.slice(i + delimiter.length) };
}
