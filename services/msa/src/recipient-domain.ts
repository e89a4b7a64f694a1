import { isNotFound, type MailResolver } from '@mailyard/dns';

/** What DNS says about mail to a domain: deliverable, definitely not (5xx now), or unknown for now (4xx). */
export type DomainVerdict = 'ok' | 'no_mail' | 'temp_fail';

const errCode = (err: unknown) => (err as NodeJS.ErrnoException | undefined)?.code;

/**
 * Postfix's reject_unknown_recipient_domain, plus RFC 7505: a domain accepts mail
 * when it has an MX, or else an A or AAAA record (RFC 5321 §5.1 implicit MX). It
 * does not when the name does not exist, when it has neither, or when its only MX is
 * the null MX ("0 ."). A lookup that fails for any other reason is a temporary
 * failure: the writer should retry, not be told the address is wrong.
 */
export async function checkRecipientDomain(resolver: MailResolver, domain: string): Promise<DomainVerdict> {
  let mx: { exchange: string; priority: number }[] = [];
  try {
    mx = await resolver.resolveMx(domain);
  } catch (err) {
    if (errCode(err) === 'ENOTFOUND') return 'no_mail'; // NXDOMAIN
    if (!isNotFound(err)) return 'temp_fail';
  }
  if (mx.length) {
    const real = mx.filter((m) => m.exchange !== '' && m.exchange !== '.');
    // RFC 7505 §3: a null MX is the only MX of its domain; one among others is ignored
    return real.length ? 'ok' : 'no_mail';
  }
  const lookups = await Promise.allSettled([resolver.resolve4(domain), resolver.resolve6(domain)]);
  if (lookups.some((r) => r.status === 'fulfilled' && r.value.length)) return 'ok';
  if (lookups.every((r) => r.status === 'fulfilled' || isNotFound(r.reason))) return 'no_mail';
  return 'temp_fail';
}
