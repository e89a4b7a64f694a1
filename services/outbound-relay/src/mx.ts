import { isIP } from 'node:net';
import { isNotFound, type MailResolver } from '@mailyard/dns';

/** One address to try, with the host name it came from (for TLS names, MTA-STS and DSNs). */
export interface Target {
  host: string;
  ip: string;
  port: number;
  /**
   * The host is among the most preferred MX hosts of the destination (Postfix:
   * SMTP_FEATURE_BEST_MX): a loop found there is permanent, at a backup MX it is not.
   */
  best?: boolean;
}

/** The outcome of routing a domain: where to connect, or why we never will (or not now). */
export type Route =
  | { kind: 'targets'; hosts: { host: string; preference: number }[]; targets: Target[] }
  | { kind: 'permanent'; status: string; text: string }
  | { kind: 'temporary'; status: string; text: string };

export interface RouteOptions {
  port: number;
  families: 'all' | 'ipv4' | 'ipv6';
  preference: 'any' | 'ipv4' | 'ipv6';
  addressLimit: number;
  /** Keeps only MX hosts this returns true for (MTA-STS enforce); others are skipped. */
  hostFilter?: (host: string) => boolean;
  /** Whether an address is one this mail system receives mail on (loop detection). */
  isOwnAddress?: (ip: string) => boolean;
  random?: () => number;
}

function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

/** MX records of `domain` in the order to try them: by preference, random among equals (RFC 5321 §5.1). */
export async function lookupMx(
  resolver: MailResolver,
  domain: string,
  random: () => number = Math.random,
): Promise<
  | { kind: 'mx'; hosts: { host: string; preference: number }[] }
  | { kind: 'implicit' }
  | { kind: 'null' }
  | { kind: 'nxdomain' }
> {
  let records: { exchange: string; priority: number }[];
  try {
    records = await resolver.resolveMx(domain);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTFOUND') return { kind: 'nxdomain' };
    // RFC 5321 §5.1: no MX records: the domain itself is the implicit MX
    if (code === 'ENODATA') return { kind: 'implicit' };
    throw err;
  }
  if (!records.length) return { kind: 'implicit' };
  // RFC 7505 §3: a single MX of "." (preference 0) says the domain accepts no mail
  if (records.some((r) => r.exchange === '' || r.exchange === '.')) return { kind: 'null' };
  const groups = new Map<number, string[]>();
  for (const r of records) {
    const host = r.exchange.toLowerCase().replace(/\.$/, '');
    groups.set(r.priority, [...(groups.get(r.priority) ?? []), host]);
  }
  const hosts: { host: string; preference: number }[] = [];
  for (const pref of [...groups.keys()].sort((a, b) => a - b)) {
    for (const host of shuffle(groups.get(pref)!, random)) hosts.push({ host, preference: pref });
  }
  return { kind: 'mx', hosts };
}

/** A and AAAA records of a host; a missing record type is an empty list, a DNS failure throws. */
export async function lookupAddresses(
  resolver: MailResolver,
  host: string,
  families: RouteOptions['families'],
): Promise<{ v4: string[]; v6: string[]; exists: boolean }> {
  if (isIP(host))
    return { v4: isIP(host) === 4 ? [host] : [], v6: isIP(host) === 6 ? [host] : [], exists: true };
  const one = async (fn: () => Promise<string[]>) => {
    try {
      return { list: await fn(), nx: false };
    } catch (err) {
      if (isNotFound(err)) return { list: [], nx: (err as NodeJS.ErrnoException).code === 'ENOTFOUND' };
      throw err;
    }
  };
  const [a, aaaa] = await Promise.all([
    families === 'ipv6' ? { list: [], nx: false } : one(() => resolver.resolve4(host)),
    families === 'ipv4' ? { list: [], nx: false } : one(() => resolver.resolve6(host)),
  ]);
  return { v4: a.list, v6: aaaa.list, exists: !(a.nx || aaaa.nx) };
}

const dnsText = (err: unknown) => (err as NodeJS.ErrnoException).code ?? String(err);

/**
 * Routes a domain to the addresses to try, in order: MX hosts by preference (random
 * among equals), each host's addresses in the preferred family order, at most
 * `addressLimit` addresses. No MX: the domain's own A/AAAA. Null MX and NXDOMAIN are
 * permanent; DNS failures are temporary.
 */
export async function routeDomain(
  resolver: MailResolver,
  domain: string,
  opts: RouteOptions,
): Promise<Route> {
  const random = opts.random ?? Math.random;
  let mx: Awaited<ReturnType<typeof lookupMx>>;
  try {
    mx = await lookupMx(resolver, domain, random);
  } catch (err) {
    return {
      kind: 'temporary',
      status: '4.4.3',
      text: `Host or domain name lookup failed: MX ${domain}: ${dnsText(err)}`,
    };
  }
  switch (mx.kind) {
    case 'null':
      // RFC 7505 §4.2: 556 5.1.10 for a domain that publishes a null MX
      return { kind: 'permanent', status: '5.1.10', text: `Domain ${domain} does not accept mail (null MX)` };
    case 'nxdomain':
      return { kind: 'permanent', status: '5.1.2', text: `Host or domain name not found: ${domain}` };
    case 'implicit':
    case 'mx':
      break;
    default: {
      const never: never = mx;
      throw new Error(`unexpected MX result ${String(never)}`);
    }
  }
  let hosts = mx.kind === 'mx' ? mx.hosts : [{ host: domain, preference: 0 }];
  // the domain's best preference, before MTA-STS leaves some hosts out: a loop at a host
  // behind a better one left out is temporary, as at any backup MX
  const bestPreference = hosts[0]!.preference;
  if (opts.hostFilter) hosts = hosts.filter((h) => opts.hostFilter!(h.host));
  if (!hosts.length) {
    return { kind: 'temporary', status: '4.7.5', text: `No MX host of ${domain} matches its MTA-STS policy` };
  }
  const targets: (Target & { preference: number })[] = [];
  let lookupFailure: string | null = null;
  let anyExists = false;
  // the preference of the first MX host that is this mail system, if any
  let self: number | null = null;
  for (const { host, preference } of hosts) {
    // once the addresses are all taken, only a host as preferred as the last one kept can
    // still be ourselves and take its equals back out (Postfix truncates at the first self)
    const full = targets.length >= opts.addressLimit;
    if (full && (!opts.isOwnAddress || preference > targets[targets.length - 1]!.preference)) break;
    let addrs: { v4: string[]; v6: string[]; exists: boolean };
    try {
      addrs = await lookupAddresses(resolver, host, opts.families);
    } catch (err) {
      lookupFailure = `${host}: ${dnsText(err)}`;
      continue;
    }
    if (addrs.exists) anyExists = true;
    const v4 = shuffle([...addrs.v4], random);
    const v6 = shuffle([...addrs.v6], random);
    const ordered =
      opts.preference === 'ipv4'
        ? [...v4, ...v6]
        : opts.preference === 'ipv6'
          ? [...v6, ...v4]
          : shuffle([...v4, ...v6], random);
    // Postfix smtp_domain_addr(): an MX host that is ourselves ends the list there; we
    // deliver only to hosts preferred to it (as a backup MX would), never to ourselves
    if (opts.isOwnAddress && ordered.some(opts.isOwnAddress)) {
      self = preference;
      break;
    }
    for (const ip of ordered) {
      if (targets.length >= opts.addressLimit) break;
      targets.push({ host, ip, port: opts.port, preference, best: preference === bestPreference });
    }
  }
  if (self !== null) {
    const better = targets.filter((t) => t.preference < self).map(({ preference: _p, ...t }): Target => t);
    if (better.length) return { kind: 'targets', hosts, targets: better };
    // RFC 3463 X.4.6 routing loop: we are the best MX of the domain (or its address) and
    // the mail would come back to us; behind better MX hosts with no address, temporary
    if (self === bestPreference)
      return { kind: 'permanent', status: '5.4.6', text: `mail for ${domain} loops back to myself` };
    return { kind: 'temporary', status: '4.4.4', text: `unable to find primary relay for ${domain}` };
  }
  if (!targets.length) {
    if (lookupFailure)
      return {
        kind: 'temporary',
        status: '4.4.3',
        text: `Host or domain name lookup failed: ${lookupFailure}`,
      };
    if (mx.kind === 'implicit' && !anyExists)
      return { kind: 'permanent', status: '5.1.2', text: `Host or domain name not found: ${domain}` };
    if (mx.kind === 'implicit')
      return {
        kind: 'permanent',
        status: '5.4.4',
        text: `Domain ${domain} has no MX and no address records`,
      };
    return { kind: 'temporary', status: '4.4.4', text: `No address records for the MX hosts of ${domain}` };
  }
  return { kind: 'targets', hosts, targets: targets.map(({ preference: _p, ...t }): Target => t) };
}

/** The addresses of one host, without MX lookup (relayhost `[host]`). */
export async function routeHost(resolver: MailResolver, host: string, opts: RouteOptions): Promise<Route> {
  let addrs: { v4: string[]; v6: string[]; exists: boolean };
  try {
    addrs = await lookupAddresses(resolver, host, opts.families);
  } catch (err) {
    return { kind: 'temporary', status: '4.4.3', text: `Host name lookup failed: ${host}: ${dnsText(err)}` };
  }
  const ordered = opts.preference === 'ipv6' ? [...addrs.v6, ...addrs.v4] : [...addrs.v4, ...addrs.v6];
  if (!ordered.length) return { kind: 'temporary', status: '4.4.4', text: `No address records for ${host}` };
  if (opts.isOwnAddress && ordered.some(opts.isOwnAddress))
    return { kind: 'permanent', status: '5.4.6', text: `mail for ${host} loops back to myself` };
  return {
    kind: 'targets',
    hosts: [{ host, preference: 0 }],
    targets: ordered.slice(0, opts.addressLimit).map((ip) => ({ host, ip, port: opts.port })),
  };
}
