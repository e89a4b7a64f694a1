import type { DkimDnsRecord } from '@mailyard/dkim';

/** One DNS record a domain needs, ready to paste into a zone. */
export interface RequiredRecord {
  /** What it is for: `mx`, `spf`, `dkim:<selector>`, `dmarc`, `mta-sts`, `tls-rpt`, `autoconfig`... */
  purpose: string;
  name: string;
  type: 'MX' | 'TXT' | 'CNAME' | 'SRV';
  /** The record's data as a resolver returns it (TXT: the strings joined). */
  value: string;
  /** A zone-file line (TXT values split in strings of at most 255 bytes). */
  zoneLine: string;
}

const quoted = (value: string) => {
  const chunks: string[] = [];
  for (let i = 0; i < value.length; i += 255) chunks.push(`"${value.slice(i, i + 255)}"`);
  return chunks.length > 1 ? `( ${chunks.join(' ')} )` : chunks[0]!;
};

const rec = (purpose: string, name: string, type: RequiredRecord['type'], value: string): RequiredRecord => ({
  purpose,
  name,
  type,
  value,
  zoneLine: `${name}. IN ${type} ${type === 'TXT' ? quoted(value) : value}`,
});

/**
 * The records a local domain needs for its mail to be received, accepted and trusted
 * elsewhere, with `hostname` (MYHOSTNAME) as the server that receives and sends it, as
 * mox prints them at `mox config domain add`: MX, SPF (only this server sends), one TXT
 * per DKIM key, DMARC (quarantine, aggregate reports to postmaster), TLS-RPT and the
 * MTA-STS policy id (RFC 8461 §3.1; the policy file itself is served over HTTPS),
 * and the SRV records that let mail clients find IMAP and submission (RFC 6186, 8314).
 */
export function requiredRecords(
  domain: string,
  hostname: string,
  dkim: readonly (DkimDnsRecord & { selector: string })[],
): RequiredRecord[] {
  const d = domain.toLowerCase();
  return [
    rec('mx', d, 'MX', `10 ${hostname}.`),
    rec('spf', d, 'TXT', 'v=spf1 mx -all'),
    ...dkim.map((k) => rec(`dkim:${k.selector}`, k.name, 'TXT', k.value)),
    rec('dmarc', `_dmarc.${d}`, 'TXT', `v=DMARC1; p=quarantine; rua=mailto:postmaster@${d}`),
    rec('tls-rpt', `_smtp._tls.${d}`, 'TXT', `v=TLSRPTv1; rua=mailto:postmaster@${d}`),
    rec('mta-sts', `_mta-sts.${d}`, 'TXT', 'v=STSv1; id=1'),
    rec('imaps', `_imaps._tcp.${d}`, 'SRV', `0 1 993 ${hostname}.`),
    rec('submissions', `_submissions._tcp.${d}`, 'SRV', `0 1 465 ${hostname}.`),
    rec('autoconfig', `autoconfig.${d}`, 'CNAME', `${hostname}.`),
  ];
}
