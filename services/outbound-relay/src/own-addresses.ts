import { BlockList, isIP } from 'node:net';
import { networkInterfaces } from 'node:os';

export interface OwnAddressOptions {
  /** `all` (every address of this host's interfaces) or the addresses themselves (Postfix: inet_interfaces). */
  inetInterfaces: string[];
  /** Addresses that reach us through a proxy or NAT (Postfix: proxy_interfaces). */
  proxyInterfaces: string[];
  /** Our source addresses (smtp_bind_address, smtp_bind_address6). */
  bindAddresses: string[];
  /** The interface addresses of this host; os.networkInterfaces() unless a test says. */
  interfaces?: () => string[];
}

function hostInterfaces(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .flatMap((i) => (i ? [i.address] : []));
}

/** How long the host's interface addresses are taken as read (`all`). */
const INTERFACES_TTL_MS = 10_000;

/**
 * Whether an address is one this mail system receives mail on, so that mail sent there
 * would come back to us (Postfix smtp_find_self(): inet_interfaces and proxy_interfaces).
 * With `all` the host's interface addresses are read again every INTERFACES_TTL_MS:
 * they may change while the service runs (a container's address, a VPN coming up).
 */
export function ownAddressCheck(opts: OwnAddressOptions): (ip: string) => boolean {
  const fixed = [
    ...opts.inetInterfaces.filter((a) => a.toLowerCase() !== 'all'),
    ...opts.proxyInterfaces,
    ...opts.bindAddresses,
  ];
  const all = opts.inetInterfaces.some((a) => a.toLowerCase() === 'all');
  const interfaces = opts.interfaces ?? hostInterfaces;
  const build = (addrs: string[]) => {
    // BlockList compares addresses, not their spelling (::1 and 0:0::1, IPv4-mapped IPv6)
    const list = new BlockList();
    for (const a of addrs) {
      const family = isIP(a.replace(/%.*$/, ''));
      if (family) list.addAddress(a.replace(/%.*$/, ''), family === 6 ? 'ipv6' : 'ipv4');
    }
    return list;
  };
  const fixedList = build(fixed);
  let hostList: { list: BlockList; until: number } | null = null;
  const hostAddresses = () => {
    const now = performance.now();
    if (!hostList || now >= hostList.until)
      hostList = { list: build(interfaces()), until: now + INTERFACES_TTL_MS };
    return hostList.list;
  };
  return (ip: string) => {
    const family = isIP(ip);
    if (!family) return false;
    const type = family === 6 ? 'ipv6' : 'ipv4';
    return fixedList.check(ip, type) || (all && hostAddresses().check(ip, type));
  };
}
