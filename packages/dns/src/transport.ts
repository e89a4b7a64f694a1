import { randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { isIP } from 'node:net';
import type { Packet } from 'dns-packet';

/** The record types the cache answers itself; anything else goes to node's resolver. */
export const CACHED_TYPES = ['A', 'AAAA', 'MX', 'TXT', 'PTR'] as const;
export type CachedType = (typeof CACHED_TYPES)[number];

export const isCachedType = (t: string): t is CachedType => (CACHED_TYPES as readonly string[]).includes(t);

/** What node:dns answers for each type, so callers see no difference. */
export interface Answers {
  A: string[];
  AAAA: string[];
  MX: { exchange: string; priority: number }[];
  TXT: string[][];
  PTR: string[];
}

/** An answer with the time it may be kept (RFC 1035 §3.2.1: the smallest TTL of the set). */
export interface Answer<T extends CachedType> {
  records: Answers[T];
  ttl: number;
}

/**
 * A DNS failure with node:dns's error codes: ENOTFOUND (NXDOMAIN) and ENODATA (no record
 * of the type) are answers, with the negative TTL from the zone's SOA (RFC 2308 §5) when
 * the server sent one; the others (ESERVFAIL, EREFUSED, ETIMEOUT, EBADRESP) say nothing
 * about the name.
 */
export class DnsError extends Error {
  override readonly name = 'DnsError';
  constructor(
    readonly code: string,
    readonly hostname: string,
    /** Seconds a negative answer may be kept; null: not to be kept. */
    readonly negativeTtl: number | null = null,
  ) {
    super(`query ${code} ${hostname}`);
  }
}

/** A reply too big for UDP (TC bit): the caller asks again over TCP. */
export class TruncatedError extends Error {
  override readonly name = 'TruncatedError';
}

export interface Server {
  host: string;
  port: number;
}

/** "host:port", "[v6]:port", "v6" or "host" (port 53). */
export function parseServer(s: string): Server {
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (bracket) return { host: bracket[1]!, port: Number(bracket[2] ?? 53) };
  if (isIP(s) === 6) return { host: s, port: 53 };
  const i = s.lastIndexOf(':');
  return i === -1 ? { host: s, port: 53 } : { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
}

const RCODE_ERRORS: Record<string, string> = {
  SERVFAIL: 'ESERVFAIL',
  REFUSED: 'EREFUSED',
  FORMERR: 'EFORMERR',
  NOTIMP: 'ENOTIMP',
};

/** The negative TTL of RFC 2308 §5: the smaller of the SOA's own TTL and its MINIMUM field. */
function negativeTtl(res: Packet): number | null {
  for (const a of res.authorities ?? []) {
    if (a.type === 'SOA') return Math.min(a.ttl ?? 0, a.data.minimum ?? 0);
  }
  return null;
}

/** A record of the answer section, as dns-packet decodes it (OPT never appears there). */
type Rr = { type: string; ttl?: number; data: unknown };

const stripDot = (n: string) => n.replace(/\.$/, '');

/**
 * A name as it is asked and compared: without its one trailing dot (dns-packet decodes
 * names without it) and in lower case (RFC 4343: DNS names compare case-insensitively).
 */
export const normalName = (n: string) => stripDot(n).toLowerCase();

function recordsOf<T extends CachedType>(type: T, res: Packet): Answer<T> | null {
  const rrs = ((res.answers ?? []) as Rr[]).filter((a) => a.type === type);
  if (!rrs.length) return null;
  const ttl = Math.min(...rrs.map((a) => a.ttl ?? 0));
  let records: Answers[CachedType];
  switch (type) {
    case 'A':
    case 'AAAA':
    case 'PTR':
      records = rrs.map((a) => stripDot(a.data as string));
      break;
    case 'MX':
      records = rrs.map((a) => {
        const d = a.data as { preference?: number; exchange: string };
        return { exchange: stripDot(d.exchange), priority: d.preference ?? 0 };
      });
      break;
    case 'TXT':
      // each record is its character-strings, as node:dns gives them
      records = rrs.map((a) =>
        (Array.isArray(a.data) ? (a.data as (Buffer | string)[]) : [a.data as Buffer | string]).map((c) =>
          typeof c === 'string' ? c : c.toString('utf8'),
        ),
      );
      break;
  }
  return { records: records as Answers[T], ttl };
}

/**
 * dns-packet, imported at the first question: a `mailyard` command that asks none (most of
 * them) does not load it. Callers that retry network failures load it before they try, so
 * a module that cannot be loaded is its own error, not a server that did not answer.
 */
export const packetCodec = async () => (await import('dns-packet')).default;

/**
 * One question over UDP to one server (RFC 1035 §4.2.1): a fresh socket (random source
 * port) and a random id, and only a reply from that server with that id and question is
 * taken, as stub resolvers guard against spoofed answers.
 */
export async function queryUdp<T extends CachedType>(
  server: Server,
  name: string,
  type: T,
  timeoutMs: number,
): Promise<Answer<T>> {
  const dnsPacket = await packetCodec();
  const id = randomInt(65536);
  const packet = dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
    // EDNS0 (RFC 6891) with the size DNS flag day 2020 settled on, so SPF and DKIM
    // TXT records fit without falling back to TCP
    additionals: [
      {
        type: 'OPT',
        name: '.',
        udpPayloadSize: 1232,
        extendedRcode: 0,
        ednsVersion: 0,
        flags: 0,
        flag_do: false,
        options: [],
      },
    ],
  });
  const sock = createSocket(isIP(server.host) === 6 ? 'udp6' : 'udp4');
  return new Promise<Answer<T>>((resolve, reject) => {
    const done = (err: Error | null, answer?: Answer<T>) => {
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve(answer!);
    };
    const timer = setTimeout(() => done(new DnsError('ETIMEOUT', name)), timeoutMs);
    sock.on('error', (err) => done(err));
    sock.on('message', (msg, rinfo) => {
      if (rinfo.address !== server.host || rinfo.port !== server.port) return;
      let res: Packet;
      try {
        res = dnsPacket.decode(msg);
      } catch {
        return done(new DnsError('EBADRESP', name));
      }
      const q = res.questions?.[0];
      if (res.id !== id || !q || q.type !== type || normalName(q.name) !== normalName(name)) return;
      if ((res.flags ?? 0) & dnsPacket.TRUNCATED_RESPONSE) return done(new TruncatedError(name));
      // dns-packet decodes the response code, its types do not say so
      const rcode = (res as { rcode?: string }).rcode ?? 'NOERROR';
      if (rcode === 'NXDOMAIN') return done(new DnsError('ENOTFOUND', name, negativeTtl(res)));
      if (rcode !== 'NOERROR') return done(new DnsError(RCODE_ERRORS[rcode] ?? 'ESERVFAIL', name));
      const answer = recordsOf(type, res);
      if (!answer) return done(new DnsError('ENODATA', name, negativeTtl(res)));
      done(null, answer);
    });
    sock.send(packet, server.port, server.host, (err) => {
      if (err) done(err);
    });
  });
}
