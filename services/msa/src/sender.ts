import { parseMailAddress, splitPlus } from '@mailyard/smtp-core';

/**
 * Whether `address` is one the user may send as (Postfix: reject_sender_login_mismatch
 * with smtpd_sender_login_maps): one of `owned`, or a plus-address of one
 * (`alice+news@` for `alice@`). Compared case-insensitively, domain in IDNA form.
 */
export function ownsAddress(owned: ReadonlySet<string>, address: string, delimiter: string): boolean {
  const p = parseMailAddress(address);
  if (!p.ok || p.value.domain.startsWith('[')) return false;
  const local = p.value.local.toLowerCase();
  if (owned.has(`${local}@${p.value.domain}`)) return true;
  const { base, tag } = splitPlus(local, delimiter);
  return tag !== null && owned.has(`${base}@${p.value.domain}`);
}
