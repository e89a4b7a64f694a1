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

/** Where mail clients connect (config: CLIENT_HOSTNAME and the CLIENT_*_PORT keys). */
export interface ClientEndpoints {
  hostname: string;
  imap: number;
  imaps: number;
  pop3s: number;
  submission: number;
  submissions: number;
}

/** The standard ports (RFC 8314 §7, RFC 6186) on `hostname`. */
export const standardClientEndpoints = (hostname: string): ClientEndpoints => ({
  hostname,
  imap: 143,
  imaps: 993,
  pop3s: 995,
  submission: 587,
  submissions: 465,
});

export interface ClientEndpointSettings {
  myhostname: string;
  client_hostname?: string | undefined;
  client_imap_port: number;
  client_imaps_port: number;
  client_pop3s_port: number;
  client_submission_port: number;
  client_submissions_port: number;
}

/** The client endpoints of a config carrying clientEndpointsSchema (CLIENT_HOSTNAME defaults to MYHOSTNAME). */
export function clientEndpointsOf(config: ClientEndpointSettings): ClientEndpoints {
  return {
    hostname: config.client_hostname ?? config.myhostname,
    imap: config.client_imap_port,
    imaps: config.client_imaps_port,
    pop3s: config.client_pop3s_port,
    submission: config.client_submission_port,
    submissions: config.client_submissions_port,
  };
}

/**
 * The records a local domain needs for its mail to be received, accepted and trusted
 * elsewhere, with `hostname` (MYHOSTNAME) as the server that receives and sends it, as
 * mox prints them at `mox config domain add`: MX, SPF (only this server sends), one TXT
 * per DKIM key, DMARC (quarantine, aggregate reports to postmaster), TLS-RPT and the
 * MTA-STS policy id (RFC 8461 §3.1) with the host serving its policy file (the webmail),
 * the SRV records that let mail clients find IMAP, POP3 and submission (RFC 6186; the
 * implicit-TLS ones first, RFC 8314 §5.1), and the names Thunderbird's autoconfig and
 * Outlook's autodiscover ask (served by the webmail).
 */
export function requiredRecords(
  domain: string,
  hostname: string,
  dkim: readonly (DkimDnsRecord & { selector: string })[],
  client: ClientEndpoints = standardClientEndpoints(hostname),
): RequiredRecord[] {
  const d = domain.toLowerCase();
  const c = client.hostname;
  return [
    rec('mx', d, 'MX', `10 ${hostname}.`),
    rec('spf', d, 'TXT', 'v=spf1 mx -all'),
    ...dkim.map((k) => rec(`dkim:${k.selector}`, k.name, 'TXT', k.value)),
    rec('dmarc', `_dmarc.${d}`, 'TXT', `v=DMARC1; p=quarantine; rua=mailto:postmaster@${d}`),
    rec('tls-rpt', `_smtp._tls.${d}`, 'TXT', `v=TLSRPTv1; rua=mailto:postmaster@${d}`),
    rec('mta-sts', `_mta-sts.${d}`, 'TXT', 'v=STSv1; id=1'),
    rec('mta-sts-host', `mta-sts.${d}`, 'CNAME', `${hostname}.`),
    rec('submissions', `_submissions._tcp.${d}`, 'SRV', `0 1 ${client.submissions} ${c}.`),
    rec('submission', `_submission._tcp.${d}`, 'SRV', `10 1 ${client.submission} ${c}.`),
    rec('imaps', `_imaps._tcp.${d}`, 'SRV', `0 1 ${client.imaps} ${c}.`),
    rec('imap', `_imap._tcp.${d}`, 'SRV', `10 1 ${client.imap} ${c}.`),
    rec('pop3s', `_pop3s._tcp.${d}`, 'SRV', `0 1 ${client.pop3s} ${c}.`),
    rec('autoconfig', `autoconfig.${d}`, 'CNAME', `${hostname}.`),
    rec('autodiscover', `autodiscover.${d}`, 'CNAME', `${hostname}.`),
  ];
}
