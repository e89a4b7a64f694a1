import { isIP } from 'node:net';

/**
 * PROXY protocol v1 (text) and v2 (binary), as sent by HAProxy, nginx, cloud load
 * balancers. Only honoured from configured trusted proxies: the header tells us the
 * client's real address, and the client's address decides relay, limits and lists.
 * https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
 */
export const V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);
const V1_MAX = 107;

export type ProxyHeader =
  | {
      kind: 'proxy';
      version: 1 | 2;
      sourceAddress: string;
      sourcePort: number;
      destAddress: string;
      destPort: number;
    }
  /** v2 LOCAL (health check) or v1 UNKNOWN: no client address carried. */
  | { kind: 'local'; version: 1 | 2 };

export type ParseResult =
  | { status: 'incomplete' }
  | { status: 'invalid'; reason: string }
  | { status: 'ok'; header: ProxyHeader; consumed: number };

export function parseProxyHeader(buf: Buffer): ParseResult {
  if (buf.length === 0) return { status: 'incomplete' };
  const sigLen = Math.min(buf.length, V2_SIGNATURE.length);
  if (buf.subarray(0, sigLen).equals(V2_SIGNATURE.subarray(0, sigLen))) {
    return buf.length < 16 ? { status: 'incomplete' } : parseV2(buf);
  }
  const prefix = Buffer.from('PROXY ');
  const pLen = Math.min(buf.length, prefix.length);
  if (!buf.subarray(0, pLen).equals(prefix.subarray(0, pLen)))
    return { status: 'invalid', reason: 'not a PROXY header' };
  return parseV1(buf);
}

function parseV1(buf: Buffer): ParseResult {
  const end = buf.indexOf('\r\n');
  if (end === -1)
    return buf.length >= V1_MAX
      ? { status: 'invalid', reason: 'v1 header too long' }
      : { status: 'incomplete' };
  if (end + 2 > V1_MAX) return { status: 'invalid', reason: 'v1 header too long' };
  const parts = buf.subarray(0, end).toString('latin1').split(' ');
  const consumed = end + 2;
  if (parts[1] === 'UNKNOWN') return { status: 'ok', header: { kind: 'local', version: 1 }, consumed };
  if (parts.length !== 6) return { status: 'invalid', reason: 'v1 header has the wrong number of fields' };
  const [, proto, src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  const fam = proto === 'TCP4' ? 4 : proto === 'TCP6' ? 6 : 0;
  if (!fam) return { status: 'invalid', reason: `v1 protocol ${proto} unknown` };
  if (isIP(src) !== fam || isIP(dst) !== fam)
    return { status: 'invalid', reason: 'v1 address does not match its protocol' };
  const sp = portOf(sport);
  const dp = portOf(dport);
  if (sp === null || dp === null) return { status: 'invalid', reason: 'v1 port out of range' };
  return {
    status: 'ok',
    header: { kind: 'proxy', version: 1, sourceAddress: src, sourcePort: sp, destAddress: dst, destPort: dp },
    consumed,
  };
}

function portOf(text: string): number | null {
  if (!/^\d{1,5}$/.test(text)) return null;
  const n = Number(text);
  return n <= 65535 ? n : null;
}

function parseV2(buf: Buffer): ParseResult {
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return { status: 'invalid', reason: 'v2 version is not 2' };
  const command = verCmd & 0x0f;
  const famProto = buf[13]!;
  const len = buf.readUInt16BE(14);
  if (len > 2048) return { status: 'invalid', reason: 'v2 header too long' };
  const total = 16 + len;
  if (buf.length < total) return { status: 'incomplete' };
  if (command === 0x0) return { status: 'ok', header: { kind: 'local', version: 2 }, consumed: total };
  if (command !== 0x1) return { status: 'invalid', reason: 'v2 command unknown' };
  const family = famProto >> 4;
  const transport = famProto & 0x0f;
  if (family === 0) return { status: 'ok', header: { kind: 'local', version: 2 }, consumed: total };
  if (transport !== 1) return { status: 'invalid', reason: 'v2 transport is not a stream' };
  const body = buf.subarray(16, total);
  if (family === 1) {
    if (len < 12) return { status: 'invalid', reason: 'v2 IPv4 address block too short' };
    return {
      status: 'ok',
      header: {
        kind: 'proxy',
        version: 2,
        sourceAddress: [...body.subarray(0, 4)].join('.'),
        destAddress: [...body.subarray(4, 8)].join('.'),
        sourcePort: body.readUInt16BE(8),
        destPort: body.readUInt16BE(10),
      },
      consumed: total,
    };
  }
  if (family === 2) {
    if (len < 36) return { status: 'invalid', reason: 'v2 IPv6 address block too short' };
    return {
      status: 'ok',
      header: {
        kind: 'proxy',
        version: 2,
        sourceAddress: ipv6(body.subarray(0, 16)),
        destAddress: ipv6(body.subarray(16, 32)),
        sourcePort: body.readUInt16BE(32),
        destPort: body.readUInt16BE(34),
      },
      consumed: total,
    };
  }
  return { status: 'invalid', reason: 'v2 address family not supported (only TCP over IPv4/IPv6)' };
}

function ipv6(b: Buffer): string {
  // an IPv4-mapped address (::ffff:a.b.c.d, RFC 4291 §2.5.5.2), as a dual-stack load
  // balancer sends for IPv4 clients: the client's IPv4 address, as every check expects it
  if (b.subarray(0, 10).every((byte) => byte === 0) && b.readUInt16BE(10) === 0xffff)
    return [...b.subarray(12, 16)].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // compress the longest run of zero groups (RFC 5952)
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best === -1) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** Builds a v2 header (tests and tools that front Mailyard). */
export function buildProxyV2(src: string, sport: number, dst: string, dport: number): Buffer {
  const v6 = isIP(src) === 6;
  const addr = (ip: string) =>
    v6 ? Buffer.from(expand6(ip).flatMap((g) => [g >> 8, g & 0xff])) : Buffer.from(ip.split('.').map(Number));
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(sport, 0);
  ports.writeUInt16BE(dport, 2);
  const block = Buffer.concat([addr(src), addr(dst), ports]);
  const head = Buffer.alloc(4);
  head[0] = 0x21;
  head[1] = v6 ? 0x21 : 0x11;
  head.writeUInt16BE(block.length, 2);
  return Buffer.concat([V2_SIGNATURE, head, block]);
}

function expand6(ip: string): number[] {
  const [h, t] = ip.split('::') as [string, string | undefined];
  const hs = h ? h.split(':') : [];
  const ts = t ? t.split(':') : [];
  const all = t === undefined ? hs : [...hs, ...Array<string>(8 - hs.length - ts.length).fill('0'), ...ts];
  return all.map((g) => parseInt(g || '0', 16));
}
