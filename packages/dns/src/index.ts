import { promises as dnsp } from 'node:dns';
import { isIP } from 'node:net';
import { DnsCache, type DnsCacheOptions } from './cache.js';
import { isCachedType, type Answers } from './transport.js';

export { DnsError } from './transport.js';
export type { DnsCacheOptions } from './cache.js';

/**
 * The one resolver every lookup in Mailyard goes through. Built from DNS_SERVERS
 * (host:port pairs) or the system's resolvers, with a timeout and a small retry count
 * so a dead DNS server turns into a temporary failure, not a stuck session; answers
 * are kept in process for their TTL, negative ones for the zone's negative TTL.
 */
export interface MailResolver {
  resolveMx(name: string): Promise<{ exchange: string; priority: number }[]>;
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
  resolveTxt(name: string): Promise<string[][]>;
  /**
   * PTR names of an address. Asked as a PTR query of its reverse name, so a broken DNS
   * (SERVFAIL, timeout) is told apart from "no name", which node's reverse() is not.
   */
  reverse(ip: string): Promise<string[]>;
  /**
   * Any record type by name, as node:dns's resolve() answers it, typed as mailauth's
   * resolver is (its lookups: TXT, MX, A, AAAA, PTR, CNAME).
   */
  resolve(name: string, type: string): Promise<string[] | string[][]>;
  /** The node:dns resolver on the same servers, uncached (for what the cache does not answer). */
  readonly raw: dnsp.Resolver;
}

export interface ResolverOptions {
  /** host:port pairs; empty uses the system's resolvers. */
  servers?: string[];
  /**
   * How long one lookup may take in all (default 3 s), split evenly among the tries:
   * a session waits for it, and node:dns (c-ares) shortens its own waits to what it
   * sees of the server, which a fixed wait per try would not.
   */
  timeoutMs?: number;
  /** Tries per server (default 2). */
  tries?: number;
  /** The in-process cache; false asks the servers every time. */
  cache?: DnsCacheOptions | false;
}

export function createResolver(opts: ResolverOptions = {}): MailResolver {
  const timeoutMs = opts.timeoutMs ?? 3000;
  const tries = opts.tries ?? 2;
  const r = new dnsp.Resolver({ timeout: timeoutMs, tries });
  if (opts.servers?.length) {
    // node:dns takes "[v6]:port" or "v4:port"
    r.setServers(opts.servers.map((s) => (isIP(s) === 6 ? `[${s}]` : s)));
  }
  const cache = new DnsCache({
    // node:dns keeps what it read from the system's resolv.conf
    servers: r.getServers(),
    timeoutMs: Math.max(1, Math.floor(timeoutMs / tries)),
    tries,
    tcp: r,
    ...(opts.cache === false ? { maxEntries: 0 } : opts.cache),
  });
  const resolve = <T extends keyof Answers>(name: string, type: T) => cache.lookup(name, type);
  return {
    raw: r,
    resolveMx: (n) => resolve(n, 'MX'),
    resolve4: (n) => resolve(n, 'A'),
    resolve6: (n) => resolve(n, 'AAAA'),
    resolveTxt: (n) => resolve(n, 'TXT'),
    reverse: (ip) => {
      const name = reverseName(ip);
      if (!name)
        return Promise.reject(Object.assign(new Error(`not an IP address: ${ip}`), { code: 'EINVAL' }));
      return resolve(name, 'PTR');
    },
    resolve: (name, type) => {
      const t = type.toUpperCase();
      const p = isCachedType(t) ? resolve(name, t) : r.resolve(name, t as 'CNAME');
      return p as Promise<string[] | string[][]>;
    },
  };
}

/**
 * The name under `zone` that stands for an IP address: reversed octets (IPv4) or
 * nibbles (IPv6), as PTR lookups (in-addr.arpa, ip6.arpa) and DNS lists use it; null
 * for something that is not an address. An IPv4-mapped IPv6 address counts as IPv4.
 */
export function reverseName(ip: string, zone?: string): string | null {
  const plain = ip.replace(/^::ffff:/i, '');
  if (isIP(plain) === 4) return `${plain.split('.').reverse().join('.')}.${zone ?? 'in-addr.arpa'}`;
  if (isIP(plain) === 6) {
    const [h, t] = plain.split('::') as [string, string | undefined];
    const hs = h ? h.split(':') : [];
    const ts = t ? t.split(':') : [];
    const groups =
      t === undefined ? hs : [...hs, ...Array<string>(8 - hs.length - ts.length).fill('0'), ...ts];
    const hex = groups.map((g) => g.padStart(4, '0')).join('');
    return `${[...hex].reverse().join('.')}.${zone ?? 'ip6.arpa'}`;
  }
  return null;
}

/** DNS error codes that mean "this name does not exist / has no such record": a definite answer. */
export function isNotFound(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOTFOUND' || code === 'ENODATA';
}

/**
 * Reverse-resolves `ip` and keeps only names that resolve forward to the same address
 * (forward-confirmed reverse DNS). Returns the PTR names and the confirmed one, if any.
 * Throws the lookup's error when no name confirms and a lookup failed without an
 * answer (timeout, SERVFAIL): that says nothing about the client, and Postfix too
 * counts its name as a temporary failure then (450), never as "unknown".
 */
export async function forwardConfirmedReverse(
  resolver: MailResolver,
  ip: string,
): Promise<{ ptr: string[]; confirmed: string | null }> {
  let ptr: string[] = [];
  try {
    ptr = await resolver.reverse(ip);
  } catch (err) {
    if (isNotFound(err)) return { ptr: [], confirmed: null };
    throw err;
  }
  const family = isIP(ip.replace(/^::ffff:/i, ''));
  const plain = ip.replace(/^::ffff:/i, '');
  let failed: Error | null = null;
  for (const name of ptr.slice(0, 10)) {
    try {
      const addrs = family === 6 ? await resolver.resolve6(name) : await resolver.resolve4(name);
      if (addrs.some((a) => a.toLowerCase() === plain.toLowerCase())) return { ptr, confirmed: name };
    } catch (err) {
      // this name does not confirm (or cannot be known to now); try the next
      if (!isNotFound(err)) failed ??= err instanceof Error ? err : new Error(String(err));
    }
  }
  if (failed) throw failed;
  return { ptr, confirmed: null };
}
