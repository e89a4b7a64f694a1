import { readFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { createResolver, isNotFound, reverseName, type MailResolver } from '@mailyard/dns';
import type { DkimDnsRecord } from '@mailyard/dkim';
import {
  clientEndpointsOf,
  requiredRecords,
  type ClientEndpointSettings,
  type ClientEndpoints,
  type RequiredRecord,
} from './dns-records.js';

/**
 * What a check found: `ok`, `wrong` (published, but not what the server needs), `missing`
 * (the name or the record does not exist), or `unchecked` (the resolver failed: a
 * timeout or SERVFAIL says nothing about the record, so it is never called missing).
 */
export type CheckStatus = 'ok' | 'wrong' | 'missing' | 'unchecked';

/** The groups the console and the metrics show records in. */
export type RecordKind = 'mx' | 'spf' | 'dkim' | 'dmarc' | 'mta-sts' | 'tls-rpt' | 'srv';

export interface RecordCheck {
  kind: RecordKind;
  name: string;
  type: RequiredRecord['type'];
  /** The record to publish, as a resolver returns it. */
  expected: string[];
  /** What DNS answers now, in the same form. */
  found: string[];
  status: CheckStatus;
  /** The difference, or why it could not be checked, in one sentence. */
  detail?: string;
  /** The zone-file line to paste. */
  zoneLine: string;
}

export interface DomainReport {
  domain: string;
  checkedAt: string;
  records: RecordCheck[];
}

export interface AddressCheck {
  address: string;
  /** MYHOSTNAME resolves to this address. */
  forward: boolean;
  /** The names its PTR record gives. */
  ptr: string[];
  status: CheckStatus;
  detail?: string;
}

export interface DnsblCheck {
  list: string;
  address: string;
  listed: boolean;
  /** false when the list could not be asked (then `listed` says nothing). */
  checked: boolean;
  detail?: string;
}

export interface ServerReport {
  hostname: string;
  checkedAt: string;
  addresses: AddressCheck[];
  dnsbl: DnsblCheck[];
  tls: { notAfter: string | null; daysLeft: number | null; detail?: string };
  /** Why no address could be checked (MYHOSTNAME does not resolve, or the resolver failed). */
  detail?: string;
}

export interface DnsCheckSettings {
  /** MYHOSTNAME: the MX target, the name senders and the PTR records must give. */
  hostname: string;
  client: ClientEndpoints;
  /** The addresses mail leaves from (SMTP_BIND_ADDRESS, SMTP_BIND_ADDRESS6); empty: MYHOSTNAME's own. */
  sendingAddresses: string[];
  /** TLS_CERT_FILE; unset: a self-signed certificate is made at start, whose expiry says nothing. */
  tlsCertFile?: string | undefined;
  now?: () => number;
}

type Lookup<T> = { kind: 'found'; value: T } | { kind: 'none' } | { kind: 'temp'; error: string };

async function look<T>(p: Promise<T>): Promise<Lookup<T>> {
  try {
    const v = await p;
    return Array.isArray(v) && v.length === 0 ? { kind: 'none' } : { kind: 'found', value: v };
  } catch (err) {
    if (isNotFound(err)) return { kind: 'none' };
    const e = err as NodeJS.ErrnoException;
    return { kind: 'temp', error: e.code ?? e.message };
  }
}

const bare = (name: string) => name.toLowerCase().replace(/\.$/, '');
const sameName = (a: string, b: string) => bare(a) === bare(b);
/** An address as resolvers print it (IPv4-mapped as IPv4, IPv6 compressed, RFC 5952), for comparing. */
const plainIp = (ip: string) => {
  const a = ip.replace(/^::ffff:(?=\d+\.)/i, '');
  return isIP(a) === 6 ? new URL(`http://[${a}]/`).hostname.slice(1, -1) : a;
};
const unchecked = (error: string) => ({ status: 'unchecked' as const, detail: `could not check: ${error}` });

/** `tag=value` pairs of a DKIM, DMARC, MTA-STS or TLS-RPT record (RFC 6376 §3.2). */
function tags(record: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of record.split(';')) {
    const i = part.indexOf('=');
    if (i > 0) m.set(part.slice(0, i).trim().toLowerCase(), part.slice(i + 1).replace(/\s+/g, ''));
  }
  return m;
}

/** TXT records of a name, each one's strings joined (RFC 7208 §3.3). */
async function txt(resolver: MailResolver, name: string): Promise<Lookup<string[]>> {
  const l = await look(resolver.resolveTxt(name));
  return l.kind === 'found' ? { kind: 'found', value: l.value.map((r) => r.join('')) } : l;
}

/**
 * The DNS and deliverability checks: what each local domain must publish compared with
 * what DNS answers now, and the server's own identity (forward and reverse DNS of the
 * sending addresses, blocklists, certificate). All I/O goes through the resolver given;
 * give it one without a cache, so a record just fixed is seen at once.
 */
export class DnsChecker {
  private readonly now: () => number;

  constructor(
    private readonly resolver: MailResolver,
    readonly settings: DnsCheckSettings,
  ) {
    this.now = settings.now ?? Date.now;
  }

  /** MYHOSTNAME's addresses (A and AAAA). */
  private async hostAddresses(): Promise<Lookup<string[]>> {
    const [a, aaaa] = await Promise.all([
      look(this.resolver.resolve4(this.settings.hostname)),
      look(this.resolver.resolve6(this.settings.hostname)),
    ]);
    const found = [...(a.kind === 'found' ? a.value : []), ...(aaaa.kind === 'found' ? aaaa.value : [])];
    if (a.kind === 'temp' || aaaa.kind === 'temp') {
      const t = a.kind === 'temp' ? a : (aaaa as { error: string });
      return { kind: 'temp', error: t.error };
    }
    return found.length ? { kind: 'found', value: found.map(plainIp) } : { kind: 'none' };
  }

  /** The addresses mail leaves from: configured, or else MYHOSTNAME's. */
  private async sendingAddresses(host: Lookup<string[]>): Promise<Lookup<string[]>> {
    const configured = this.settings.sendingAddresses.filter((a) => isIP(a)).map(plainIp);
    return configured.length ? { kind: 'found', value: configured } : host;
  }

  /** Every record `domain` needs, each compared with what DNS answers now. */
  async checkDomain(
    domain: string,
    dkim: readonly (DkimDnsRecord & { selector: string })[],
  ): Promise<DomainReport> {
    const required = requiredRecords(domain, this.settings.hostname, dkim, this.settings.client);
    const host = await this.hostAddresses();
    const senders = await this.sendingAddresses(host);
    const records = await Promise.all(
      required.map(async (r): Promise<RecordCheck> => {
        const base = {
          kind: kindOf(r.purpose),
          name: r.name,
          type: r.type,
          expected: [r.value],
          zoneLine: r.zoneLine,
        };
        const result = await this.compare(domain, r, host, senders);
        return { ...base, ...result };
      }),
    );
    return { domain, checkedAt: new Date(this.now()).toISOString(), records };
  }

  /**
   * Whether DNS answers a DKIM key's record (`dnsRecord`) as the one DKIM record at its
   * name, with v=DKIM1 (when present), the key's algorithm (k=, rsa when absent: RFC 6376
   * §3.6.1) and the same public key (p=). More than one DKIM record is wrong: verifiers
   * such as mailauth use the first one DNS sends, in whatever order.
   */
  async checkDkimRecord(
    r: Pick<DkimDnsRecord, 'name' | 'value'>,
  ): Promise<{ found: string[]; status: CheckStatus; detail?: string }> {
    const l = await txt(this.resolver, r.name);
    if (l.kind !== 'found') return notFound(l);
    const want = tags(r.value);
    const wrong = (detail: string) => ({ found: l.value, status: 'wrong' as const, detail });
    const records = l.value.filter((v) => /^\s*v\s*=\s*DKIM/i.test(v) || tags(v).has('p'));
    if (records.length > 1) return wrong(`more than one DKIM record at ${r.name}`);
    if (!records.length) return wrong('no DKIM record (v=DKIM1; ... p=) among the TXT records');
    const got = tags(records[0]!);
    const v = got.get('v');
    if (v !== undefined && v !== 'DKIM1')
      return wrong(`the published record says v=${v} where DKIM1 is required`);
    if (got.get('p') === '') return wrong('the published key is revoked (empty p=)');
    const k = got.get('k')?.toLowerCase();
    const algorithm = want.get('k') ?? 'rsa';
    if ((k ?? 'rsa') !== algorithm)
      return wrong(`the published record says k=${k ?? 'rsa (no k=)'} where the key is ${algorithm}`);
    if (got.get('p') !== want.get('p')) return wrong('the published public key differs from the stored key');
    return { found: l.value, status: 'ok' };
  }

  private async compare(
    domain: string,
    r: RequiredRecord,
    host: Lookup<string[]>,
    senders: Lookup<string[]>,
  ): Promise<{ found: string[]; status: CheckStatus; detail?: string }> {
    const { hostname, client } = this.settings;
    const purpose = r.purpose.startsWith('dkim:') ? 'dkim' : r.purpose;
    switch (purpose) {
      case 'mx': {
        const l = await look(this.resolver.resolveMx(r.name));
        if (l.kind !== 'found') return notFound(l);
        const found = l.value.map((m) => `${m.priority} ${bare(m.exchange) || '.'}.`.replace('..', '.'));
        if (l.value.some((m) => sameName(m.exchange, hostname))) return { found, status: 'ok' };
        return { found, status: 'wrong', detail: `no MX record names ${hostname}` };
      }
      case 'spf':
        return this.compareSpf(domain, r.name, senders);
      case 'dkim':
        return this.checkDkimRecord(r);
      case 'dmarc':
        return this.compareTagRecord(r.name, /^v\s*=\s*DMARC1\s*(;|$)/i, 'DMARC', (t) =>
          ['none', 'quarantine', 'reject'].includes(t.get('p') ?? '') ? null : 'no valid p= policy',
        );
      case 'tls-rpt':
        return this.compareTagRecord(r.name, /^v\s*=\s*TLSRPTv1\s*(;|$)/i, 'TLS-RPT', (t) =>
          t.get('rua') ? null : 'no rua= address for the reports',
        );
      case 'mta-sts':
        return this.compareTagRecord(r.name, /^v\s*=\s*STSv1\s*(;|$)/i, 'MTA-STS', (t) =>
          /^[A-Za-z0-9]{1,32}$/.test(t.get('id') ?? '') ? null : 'no valid id= (1 to 32 letters or digits)',
        );
      case 'mta-sts-host':
      case 'autoconfig':
      case 'autodiscover':
        return this.compareAlias(r.name, hostname, host);
      case 'submissions':
      case 'submission':
      case 'imaps':
      case 'imap':
      case 'pop3s':
        return this.compareSrv(r.name, client.hostname, client[purpose]);
      default:
        return { found: [], status: 'unchecked', detail: `no check for ${r.purpose}` };
    }
  }

  /**
   * SPF judged as a receiver would: the domain's record evaluated (mailauth, RFC 7208)
   * for each address mail leaves from, which must all pass.
   */
  private async compareSpf(domain: string, name: string, senders: Lookup<string[]>) {
    const l = await txt(this.resolver, name);
    if (l.kind === 'temp') return { found: [], ...unchecked(l.error) };
    const found = l.kind === 'found' ? l.value.filter((v) => /^v=spf1(\s|$)/i.test(v)) : [];
    if (!found.length) return { found, status: 'missing' as const };
    if (found.length > 1)
      return {
        found,
        status: 'wrong' as const,
        detail: `${found.length} SPF records: receivers treat that as an error (RFC 7208 §4.5)`,
      };
    if (senders.kind === 'temp') return { found, ...unchecked(senders.error) };
    if (senders.kind === 'none')
      return {
        found,
        status: 'unchecked' as const,
        detail: `no sending address known (${this.settings.hostname} does not resolve)`,
      };
    const refused: string[] = [];
    // loaded when first asked for: most of what the CLI would otherwise spend starting up
    const { spf: spfCheck } = await import('mailauth');
    for (const ip of senders.value) {
      const res = (await spfCheck({
        sender: `postmaster@${domain}`,
        ip,
        helo: this.settings.hostname,
        mta: this.settings.hostname,
        resolver: (n: string, t: string) => this.resolver.resolve(n, t),
      })) as { status?: { result?: string } };
      const result = res.status?.result ?? 'none';
      if (result === 'temperror') return { found, ...unchecked(`SPF lookup failed for ${ip}`) };
      if (result !== 'pass') refused.push(`${ip} (${result})`);
    }
    if (refused.length)
      return { found, status: 'wrong' as const, detail: `does not permit ${refused.join(', ')}` };
    return { found, status: 'ok' as const };
  }

  /** A `v=...; tag=value` record (DMARC, TLS-RPT, MTA-STS): exactly one, and valid. */
  private async compareTagRecord(
    name: string,
    version: RegExp,
    what: string,
    invalid: (t: Map<string, string>) => string | null,
  ) {
    const l = await txt(this.resolver, name);
    if (l.kind === 'temp') return { found: [], ...unchecked(l.error) };
    const found = l.kind === 'found' ? l.value.filter((v) => version.test(v)) : [];
    if (!found.length) return { found, status: 'missing' as const };
    if (found.length > 1)
      return {
        found,
        status: 'wrong' as const,
        detail: `${found.length} ${what} records where one is allowed`,
      };
    const why = invalid(tags(found[0]!));
    return why ? { found, status: 'wrong' as const, detail: why } : { found, status: 'ok' as const };
  }

  /** A name that must lead to this server: a CNAME to it, or address records equal to its own. */
  private async compareAlias(name: string, target: string, host: Lookup<string[]>) {
    const cname = await look(this.resolver.resolve(name, 'CNAME') as Promise<string[]>);
    if (cname.kind === 'temp') return { found: [], ...unchecked(cname.error) };
    if (cname.kind === 'found') {
      const found = cname.value.map((c) => `${bare(c)}.`);
      return cname.value.some((c) => sameName(c, target))
        ? { found, status: 'ok' as const }
        : { found, status: 'wrong' as const, detail: `points to ${found.join(', ')}, not ${target}` };
    }
    const [a, aaaa] = await Promise.all([
      look(this.resolver.resolve4(name)),
      look(this.resolver.resolve6(name)),
    ]);
    const temp = [a, aaaa].find((x) => x.kind === 'temp');
    if (temp?.kind === 'temp') return { found: [], ...unchecked(temp.error) };
    const addrs = [...(a.kind === 'found' ? a.value : []), ...(aaaa.kind === 'found' ? aaaa.value : [])].map(
      plainIp,
    );
    if (!addrs.length) return { found: [], status: 'missing' as const };
    if (host.kind === 'temp') return { found: addrs, ...unchecked(host.error) };
    const own = host.kind === 'found' ? host.value : [];
    return addrs.every((x) => own.includes(x))
      ? { found: addrs, status: 'ok' as const, detail: `address records of ${target} instead of a CNAME` }
      : { found: addrs, status: 'wrong' as const, detail: `its addresses are not those of ${target}` };
  }

  /** A client SRV record (RFC 6186): one of them on the client host and port. */
  private async compareSrv(name: string, target: string, port: number) {
    const l = await look(
      this.resolver.resolve(name, 'SRV') as unknown as Promise<
        { priority: number; weight: number; port: number; name: string }[]
      >,
    );
    if (l.kind !== 'found') return notFound(l);
    const found = l.value.map((s) =>
      `${s.priority} ${s.weight} ${s.port} ${bare(s.name) || '.'}.`.replace('..', '.'),
    );
    if (l.value.some((s) => sameName(s.name, target) && s.port === port))
      return { found, status: 'ok' as const };
    if (l.value.every((s) => bare(s.name) === ''))
      return { found, status: 'wrong' as const, detail: 'published as "not offered" (target .)' };
    return { found, status: 'wrong' as const, detail: `no record gives ${target} port ${port}` };
  }

  /** The server's identity: forward and reverse DNS of each sending address, blocklists, certificate. */
  async checkServer(dnsblZones: readonly string[]): Promise<ServerReport> {
    const { hostname } = this.settings;
    const host = await this.hostAddresses();
    const senders = await this.sendingAddresses(host);
    const report: ServerReport = {
      hostname,
      checkedAt: new Date(this.now()).toISOString(),
      addresses: [],
      dnsbl: [],
      tls: await this.certificate(),
    };
    if (senders.kind === 'temp') report.detail = `could not check: ${senders.error}`;
    else if (senders.kind === 'none')
      report.detail = `${hostname} has no A or AAAA record, and no SMTP_BIND_ADDRESS is set`;
    const addresses = senders.kind === 'found' ? senders.value : [];
    report.addresses = await Promise.all(addresses.map((ip) => this.checkAddress(ip, host)));
    report.dnsbl = (
      await Promise.all(addresses.map((ip) => Promise.all(dnsblZones.map((z) => this.checkDnsbl(ip, z)))))
    ).flat();
    return report;
  }

  /** Forward-confirmed reverse DNS of one sending address: its PTR names MYHOSTNAME, which resolves back to it. */
  private async checkAddress(ip: string, host: Lookup<string[]>): Promise<AddressCheck> {
    const { hostname } = this.settings;
    const forward = host.kind === 'found' && host.value.includes(ip);
    const ptr = await look(this.resolver.reverse(ip));
    const names = ptr.kind === 'found' ? ptr.value.map(bare) : [];
    const base = { address: ip, forward, ptr: names };
    if (ptr.kind === 'temp') return { ...base, ...unchecked(ptr.error) };
    if (host.kind === 'temp') return { ...base, ...unchecked(host.error) };
    if (ptr.kind === 'none') return { ...base, status: 'missing', detail: `no PTR record for ${ip}` };
    if (!names.some((n) => sameName(n, hostname)))
      return { ...base, status: 'wrong', detail: `PTR names ${names.join(', ')}, not ${hostname}` };
    if (!forward) return { ...base, status: 'wrong', detail: `${hostname} does not resolve to ${ip}` };
    return { ...base, status: 'ok' };
  }

  /**
   * One address on one DNSBL (RFC 5782 §2.1): an answer in 127.0.0.0/8 lists it. Spamhaus
   * answers 127.255.255.x to queries it refuses (from public resolvers, over quota): not
   * a listing, and not a clean bill either.
   */
  private async checkDnsbl(ip: string, zone: string): Promise<DnsblCheck> {
    const base = { list: zone, address: ip };
    const name = reverseName(ip, zone);
    if (!name) return { ...base, listed: false, checked: false, detail: 'not an IP address' };
    const l = await look(this.resolver.resolve4(name));
    if (l.kind === 'none') return { ...base, listed: false, checked: true };
    if (l.kind === 'temp')
      return { ...base, listed: false, checked: false, detail: `could not check: ${l.error}` };
    if (l.value.some((a) => a.startsWith('127.255.255.')) || !l.value.every((a) => a.startsWith('127.')))
      return {
        ...base,
        listed: false,
        checked: false,
        detail: `the list refused the query (${l.value.join(', ')}); ask it through your own resolver`,
      };
    return { ...base, listed: true, checked: true, detail: `answered ${l.value.join(', ')}` };
  }

  private async certificate(): Promise<ServerReport['tls']> {
    const file = this.settings.tlsCertFile;
    if (!file)
      return {
        notAfter: null,
        daysLeft: null,
        detail: 'no TLS_CERT_FILE: each service makes a self-signed certificate at start',
      };
    try {
      const cert = new X509Certificate(await readFile(file));
      const notAfter = new Date(cert.validTo);
      return {
        notAfter: notAfter.toISOString(),
        daysLeft: Math.floor((notAfter.getTime() - this.now()) / 86_400_000),
      };
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      return { notAfter: null, daysLeft: null, detail: `cannot read ${file}: ${e.code ?? e.message}` };
    }
  }
}

function notFound(l: { kind: 'none' } | { kind: 'temp'; error: string }) {
  return l.kind === 'temp' ? { found: [], ...unchecked(l.error) } : { found: [], status: 'missing' as const };
}

function kindOf(purpose: string): RecordKind {
  if (purpose.startsWith('dkim:')) return 'dkim';
  switch (purpose) {
    case 'mx':
    case 'spf':
    case 'dmarc':
    case 'tls-rpt':
    case 'mta-sts':
      return purpose;
    case 'mta-sts-host':
      return 'mta-sts';
    default:
      return 'srv';
  }
}

/** Whether a report has something to fix (wrong or missing), something unchecked, or neither. */
export function verdictOf(statuses: readonly (CheckStatus | 'listed')[]): 'ok' | 'problems' | 'unchecked' {
  if (statuses.some((s) => s === 'wrong' || s === 'missing' || s === 'listed')) return 'problems';
  if (statuses.some((s) => s === 'unchecked')) return 'unchecked';
  return 'ok';
}

/** Every status a server report holds (addresses, lists, certificate). */
export function serverStatuses(r: ServerReport): (CheckStatus | 'listed')[] {
  const out: (CheckStatus | 'listed')[] = r.addresses.map((a) => a.status);
  if (r.detail) out.push(r.detail.startsWith('could not') ? 'unchecked' : 'missing');
  for (const l of r.dnsbl) out.push(l.listed ? 'listed' : l.checked ? 'ok' : 'unchecked');
  if (r.tls.daysLeft !== null) out.push(r.tls.daysLeft < 0 ? 'wrong' : 'ok');
  return out;
}

/** The settings the checks read, as the services' and the CLI's configs carry them. */
export interface DnsCheckConfig extends ClientEndpointSettings {
  dns_servers: string[];
  smtp_bind_address: string;
  smtp_bind_address6: string;
  tls_cert_file?: string | undefined;
}

/**
 * The checker of a config, on a resolver of its own without a cache: a record the
 * administrator has just fixed is seen on the next check, not after its TTL.
 */
export function dnsCheckerFromConfig(config: DnsCheckConfig, opts: { now?: () => number } = {}): DnsChecker {
  return new DnsChecker(createResolver({ servers: config.dns_servers, cache: false }), {
    hostname: config.myhostname,
    client: clientEndpointsOf(config),
    sendingAddresses: [config.smtp_bind_address, config.smtp_bind_address6].filter(Boolean),
    tlsCertFile: config.tls_cert_file,
    ...opts,
  });
}
