import type { promises as dnsp } from 'node:dns';
import {
  DnsError,
  TruncatedError,
  normalName,
  packetCodec,
  parseServer,
  queryUdp,
  type Answer,
  type Answers,
  type CachedType,
  type Server,
} from './transport.js';

export interface DnsCacheOptions {
  /** Answers kept at most (least recently used go first); 0 keeps none. Default 10,000. */
  maxEntries?: number;
  /** Longest time an answer is kept, in seconds, whatever its TTL (unbound's cache-max-ttl). Default a day. */
  maxTtl?: number;
  /** Longest time a negative answer is kept, in seconds (unbound's cache-max-negative-ttl). Default an hour. */
  maxNegativeTtl?: number;
  /** Milliseconds since the epoch (tests pass a controllable clock). */
  now?: () => number;
}

interface Entry {
  expires: number;
  answer?: Answers[CachedType];
  error?: DnsError;
}

/**
 * A kept negative answer as a new error, without a stack: a sender domain with an MX and
 * no address is asked for its A and AAAA at every message, and capturing the stack of each
 * cost more than the lookup.
 */
function keptNegative(e: DnsError): DnsError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new DnsError(e.code, e.hostname, e.negativeTtl);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** Failures that say nothing about the name: the next server (or try) is asked. */
const RETRYABLE = new Set(['ETIMEOUT', 'ESERVFAIL', 'EREFUSED', 'EBADRESP', 'EFORMERR', 'ENOTIMP']);

/**
 * An in-process DNS cache in front of the configured servers, as a stub resolver
 * with a cache (unbound, nscd) would be: an answer is kept for its TTL (the smallest
 * of its records, RFC 2181 §5.2), NXDOMAIN and NODATA for the negative TTL of the
 * zone's SOA (RFC 2308 §5; without an SOA not at all), failures never. Questions
 * asked again while one is on its way wait for its answer instead of asking twice.
 * Callers get copies, so nothing they do changes what is kept.
 */
export class DnsCache {
  private readonly entries = new Map<string, Entry>();
  private readonly pending = new Map<string, Promise<Answers[CachedType]>>();
  private readonly servers: Server[];
  private readonly maxEntries: number;
  private readonly maxTtl: number;
  private readonly maxNegativeTtl: number;
  private readonly now: () => number;

  constructor(
    private readonly opts: DnsCacheOptions & {
      /** host:port, [v6]:port or bare addresses. */
      servers: string[];
      /** The wait for one server's answer to one try. */
      timeoutMs: number;
      tries: number;
      /** Asked when an answer does not fit in UDP (node:dns retries over TCP). */
      tcp: dnsp.Resolver;
    },
  ) {
    this.servers = opts.servers.map(parseServer);
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.maxTtl = opts.maxTtl ?? 86_400;
    this.maxNegativeTtl = opts.maxNegativeTtl ?? 3600;
    this.now = opts.now ?? Date.now;
  }

  /** Entries kept now (expired ones included until they are asked for or pushed out). */
  get size(): number {
    return this.entries.size;
  }

  async lookup<T extends CachedType>(asked: string, type: T): Promise<Answers[T]> {
    // "example.test." and "Example.test" are one name: asked, kept and matched as one
    const name = normalName(asked);
    const key = `${type} ${name}`;
    const hit = this.entries.get(key);
    if (hit) {
      this.entries.delete(key);
      if (hit.expires > this.now()) {
        this.entries.set(key, hit);
        if (hit.error) throw keptNegative(hit.error);
        return copy(type, hit.answer as Answers[T]);
      }
    }
    let p = this.pending.get(key);
    if (!p) {
      p = this.ask(name, type).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return copy(type, (await p) as Answers[T]);
  }

  private async ask<T extends CachedType>(name: string, type: T): Promise<Answers[T]> {
    let answer: Answer<T>;
    try {
      answer = await this.query(name, type);
    } catch (err) {
      if (err instanceof DnsError && err.negativeTtl !== null && err.negativeTtl > 0)
        this.keep(name, type, { error: err }, Math.min(err.negativeTtl, this.maxNegativeTtl));
      throw err;
    }
    if (answer.ttl > 0) this.keep(name, type, { answer: answer.records }, Math.min(answer.ttl, this.maxTtl));
    return answer.records;
  }

  /** Each try asks every server in turn, as node:dns (c-ares) does. */
  private async query<T extends CachedType>(name: string, type: T): Promise<Answer<T>> {
    if (!this.servers.length) return { records: await this.viaNode(name, type), ttl: 0 };
    await packetCodec();
    let last: unknown = null;
    for (let t = 0; t < this.opts.tries; t++) {
      for (const server of this.servers) {
        try {
          return await queryUdp(server, name, type, this.opts.timeoutMs);
        } catch (err) {
          // too big for UDP: node:dns asks over TCP; its answer carries no TTL, so it is not kept
          if (err instanceof TruncatedError) return { records: await this.viaNode(name, type), ttl: 0 };
          if (err instanceof DnsError && !RETRYABLE.has(err.code)) throw err;
          last = err;
        }
      }
    }
    throw last instanceof DnsError ? last : new DnsError('ECONNREFUSED', name);
  }

  private viaNode<T extends CachedType>(name: string, type: T): Promise<Answers[T]> {
    return this.opts.tcp.resolve(name, type as 'A') as unknown as Promise<Answers[T]>;
  }

  private keep(name: string, type: CachedType, e: Omit<Entry, 'expires'>, ttl: number): void {
    if (this.maxEntries <= 0) return;
    const key = `${type} ${name}`;
    this.entries.delete(key);
    this.entries.set(key, { ...e, expires: this.now() + ttl * 1000 });
    // a Map iterates in insertion order, and a hit is inserted again: the first is the least recently used
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }
}

function copy<T extends CachedType>(type: T, a: Answers[T]): Answers[T] {
  switch (type) {
    case 'MX':
      return (a as Answers['MX']).map((m) => ({ ...m })) as Answers[T];
    case 'TXT':
      return (a as Answers['TXT']).map((t) => [...t]) as Answers[T];
    default:
      return [...(a as string[])] as Answers[T];
  }
}
