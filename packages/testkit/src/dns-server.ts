import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import dnsPacket from 'dns-packet';

export interface ZoneRecords {
  A?: string[];
  AAAA?: string[];
  MX?: { priority: number; exchange: string }[];
  TXT?: string[];
  PTR?: string[];
  CNAME?: string;
  /** Service records (RFC 2782), e.g. `_imaps._tcp.example.org`. */
  SRV?: { priority: number; weight: number; port: number; target: string }[];
  /** Answer this name with SERVFAIL (a broken authoritative server). */
  SERVFAIL?: boolean;
  /** Never answer queries for this name (a dead server: the client times out). */
  TIMEOUT?: boolean;
}
export type Zone = Record<string, ZoneRecords>;

/** `1.2.0.192.in-addr.arpa` / nibble form for IPv6: the name a PTR lookup asks for. */
export function reverseName(ip: string): string {
  if (ip.includes(':')) {
    const [h, t] = ip.split('::') as [string, string | undefined];
    const hs = h ? h.split(':') : [];
    const ts = t ? t.split(':') : [];
    const groups =
      t === undefined ? hs : [...hs, ...Array<string>(8 - hs.length - ts.length).fill('0'), ...ts];
    const hex = groups.map((g) => g.padStart(4, '0')).join('');
    return [...hex].reverse().join('.') + '.ip6.arpa';
  }
  return ip.split('.').reverse().join('.') + '.in-addr.arpa';
}

/**
 * Adds records given as `mailyard domain records` prints them (name, type, value as a
 * resolver returns it: `10 mx.example.` for MX, `0 1 993 host.` for SRV) to a zone.
 */
export function publishRecords(
  zone: Zone,
  records: readonly { name: string; type: 'MX' | 'TXT' | 'CNAME' | 'SRV'; value: string }[],
): Zone {
  const host = (n: string) => n.replace(/\.$/, '');
  for (const r of records) {
    const z: ZoneRecords = (zone[r.name] ??= {});
    const parts = r.value.split(' ');
    switch (r.type) {
      case 'MX':
        (z.MX ??= []).push({ priority: Number(parts[0]), exchange: host(parts[1]!) });
        break;
      case 'TXT':
        (z.TXT ??= []).push(r.value);
        break;
      case 'CNAME':
        z.CNAME = host(r.value);
        break;
      case 'SRV':
        (z.SRV ??= []).push({
          priority: Number(parts[0]),
          weight: Number(parts[1]),
          port: Number(parts[2]),
          target: host(parts[3]!),
        });
        break;
    }
  }
  return zone;
}

export interface TestDnsServer {
  /** host:port for DNS_SERVERS. */
  address: string;
  zone: Zone;
  /** Replace or add records while running. */
  set(name: string, records: ZoneRecords): void;
  queries: { name: string; type: string }[];
  close(): Promise<void>;
}

export interface DnsServerOptions {
  /** TTL of every record, in seconds (default 60). */
  ttl?: number;
  /**
   * With a number, NXDOMAIN and NODATA answers carry an SOA whose TTL and MINIMUM are
   * this many seconds, as an authoritative server's do (RFC 2308 §3), so resolvers keep
   * them that long. Default: no SOA, so no resolver keeps a negative answer (a name a
   * test adds later is found at once).
   */
  negativeTtl?: number;
}

/**
 * A real DNS server on 127.0.0.1 (UDP and TCP, same port), answering from a zone
 * description. Names not in the zone get NXDOMAIN; names in it without the asked
 * type get an empty NOERROR answer (NODATA), as a real authoritative server does.
 */
export async function startDnsServer(zone: Zone = {}, opts: DnsServerOptions = {}): Promise<TestDnsServer> {
  const z: Zone = {};
  for (const [k, v] of Object.entries(zone)) z[k.toLowerCase().replace(/\.$/, '')] = v;
  const queries: { name: string; type: string }[] = [];

  const answer = (query: Buffer): Buffer | null => {
    let q: dnsPacket.Packet;
    try {
      q = dnsPacket.decode(query);
    } catch {
      return null;
    }
    const question = q.questions?.[0];
    if (!question) return null;
    const name = question.name.toLowerCase().replace(/\.$/, '');
    queries.push({ name, type: question.type });
    const rec = z[name];
    if (rec?.TIMEOUT) return null;
    const base = {
      id: q.id,
      type: 'response' as const,
      flags: dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED,
      questions: q.questions,
    };
    if (rec?.SERVFAIL) return dnsPacket.encode({ ...base, flags: base.flags | 2 });
    const neg = opts.negativeTtl;
    const authorities: dnsPacket.Answer[] =
      neg === undefined
        ? []
        : [
            {
              type: 'SOA',
              name: question.name.split('.').slice(-1).join('.') || '.',
              ttl: neg,
              data: {
                mname: 'ns.test',
                rname: 'hostmaster.test',
                serial: 1,
                refresh: 3600,
                retry: 600,
                expire: 86400,
                minimum: neg,
              },
            },
          ];
    if (!rec) return dnsPacket.encode({ ...base, flags: base.flags | 3, authorities }); // rcode 3: NXDOMAIN
    const answers: dnsPacket.Answer[] = [];
    const ttl = opts.ttl ?? 60;
    if (rec.CNAME) answers.push({ type: 'CNAME', name: question.name, ttl, data: rec.CNAME });
    switch (question.type) {
      case 'A':
        for (const a of rec.A ?? []) answers.push({ type: 'A', name: question.name, ttl, data: a });
        break;
      case 'AAAA':
        for (const a of rec.AAAA ?? []) answers.push({ type: 'AAAA', name: question.name, ttl, data: a });
        break;
      case 'MX':
        for (const m of rec.MX ?? [])
          answers.push({
            type: 'MX',
            name: question.name,
            ttl,
            data: { preference: m.priority, exchange: m.exchange },
          });
        break;
      case 'TXT':
        for (const t of rec.TXT ?? []) {
          // long TXT values are split into 255-byte strings, as zone files do
          const chunks: string[] = [];
          for (let i = 0; i < t.length; i += 255) chunks.push(t.slice(i, i + 255));
          answers.push({ type: 'TXT', name: question.name, ttl, data: chunks.length ? chunks : [''] });
        }
        break;
      case 'PTR':
        for (const p of rec.PTR ?? []) answers.push({ type: 'PTR', name: question.name, ttl, data: p });
        break;
      case 'SRV':
        for (const s of rec.SRV ?? []) answers.push({ type: 'SRV', name: question.name, ttl, data: s });
        break;
      default:
        break;
    }
    return dnsPacket.encode({ ...base, answers, ...(answers.length ? {} : { authorities }) });
  };

  const udp: Socket = createSocket('udp4');
  udp.on('message', (msg, rinfo) => {
    const res = answer(msg);
    if (res) udp.send(res, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', () => resolve()));
  const port = udp.address().port;
  const tcp: Server = createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < len + 2) break;
        const res = answer(buf.subarray(2, len + 2));
        buf = buf.subarray(len + 2);
        if (res) {
          const head = Buffer.alloc(2);
          head.writeUInt16BE(res.length);
          sock.write(Buffer.concat([head, res]));
        }
      }
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(port, '127.0.0.1', () => resolve());
  }).catch(() => undefined); // TCP is a convenience; UDP carries the tests
  return {
    address: `127.0.0.1:${port}`,
    zone: z,
    queries,
    set(name, records) {
      z[name.toLowerCase().replace(/\.$/, '')] = records;
    },
    async close() {
      await new Promise<void>((r) => udp.close(() => r()));
      await new Promise<void>((r) => tcp.close(() => r()));
    },
  };
}
