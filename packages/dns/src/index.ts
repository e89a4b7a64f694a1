import { promises as dnsp } from 'node:dns';
import { isIP } from 'node:net';

/**
 * The one resolver every lookup in Mailyard goes through. Built from DNS_SERVERS
 * (host:port pairs) or the system's resolvers, with a timeout and a small retry count
 * so a dead DNS server turns into a temporary failure, not a stuck session.
 */
export interface MailResolver {
  resolveMx(name: string): Promise<{ exchange: string; priority: number }[]>;
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
  resolveTxt(name: string): Promise<string[][]>;
  reverse(ip: string): Promise<string[]>;
  /** The node:dns-compatible resolver object (for libraries such as mailauth). */
  readonly raw: dnsp.Resolver;
}

export interface ResolverOptions {
  /** host:port pairs; empty uses the system's resolvers. */
  servers?: string[];
  timeoutMs?: number;
  tries?: number;
}

export function createResolver(opts: ResolverOptions = {}): MailResolver {
  const r = new dnsp.Resolver({ timeout: opts.timeoutMs ?? 3000, tries: opts.tries ?? 2 });
  if (opts.servers?.length) {
    // node:dns takes "[v6]:port" or "v4:port"
    r.setServers(opts.servers.map((s) => (isIP(s) === 6 ? `[${s}]` : s)));
  }
  return {
    raw: r,
    resolveMx: (n) => r.resolveMx(n),
    resolve4: (n) => r.resolve4(n),
    resolve6: (n) => r.resolve6(n),
    resolveTxt: (n) => r.resolveTxt(n),
    reverse: (ip) => r.reverse(ip),
  };
}

/** DNS error codes that mean "this name does not exist / has no such record": a definite answer. */
export function isNotFound(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOTFOUND' || code === 'ENODATA';
}

/**
 * Reverse-resolves `ip` and keeps only names that resolve forward to the same address
 * (forward-confirmed reverse DNS). Returns the PTR names and the confirmed one, if any.
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
  for (const name of ptr.slice(0, 10)) {
    try {
      const addrs = family === 6 ? await resolver.resolve6(name) : await resolver.resolve4(name);
      if (addrs.some((a) => a.toLowerCase() === plain.toLowerCase())) return { ptr, confirmed: name };
    } catch {
      // this name does not confirm; try the next
    }
  }
  return { ptr, confirmed: null };
}
