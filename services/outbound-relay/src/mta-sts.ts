import { request } from 'node:https';
import type { LookupFunction } from 'node:net';
import { isNotFound, type MailResolver } from '@mailyard/dns';

/** RFC 8461 §3.2 policy. */
export interface MtaStsPolicy {
  mode: 'enforce' | 'testing' | 'none';
  /** MX patterns; `*.example.net` matches exactly one leftmost label. */
  mx: string[];
  /** Seconds the policy may be cached. */
  maxAge: number;
}

/** Fetches the policy text of a domain (`https://mta-sts.<domain>/.well-known/mta-sts.txt`). */
export type PolicyFetcher = (domain: string) => Promise<string>;

export function parsePolicy(text: string): MtaStsPolicy | null {
  const fields = new Map<string, string[]>();
  for (const raw of text.split(/\r?\n/)) {
    const i = raw.indexOf(':');
    if (i === -1) continue;
    const key = raw.slice(0, i).trim().toLowerCase();
    fields.set(key, [...(fields.get(key) ?? []), raw.slice(i + 1).trim()]);
  }
  if (fields.get('version')?.[0] !== 'STSv1') return null;
  const mode = fields.get('mode')?.[0];
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none') return null;
  const maxAge = Number(fields.get('max_age')?.[0]);
  if (!Number.isInteger(maxAge) || maxAge < 0) return null;
  const mx = (fields.get('mx') ?? []).map((m) => m.toLowerCase().replace(/\.$/, ''));
  if (mode !== 'none' && !mx.length) return null;
  return { mode, mx, maxAge: Math.min(maxAge, 31_557_600) };
}

/** RFC 8461 §4.1: exact match, or `*.` replacing exactly the leftmost label. */
export function mxMatches(host: string, patterns: string[]): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  return patterns.some((p) => {
    if (p.startsWith('*.')) {
      const dot = h.indexOf('.');
      return dot > 0 && h.slice(dot + 1) === p.slice(2);
    }
    return h === p;
  });
}

/** The `id` of the one `v=STSv1` TXT record at `_mta-sts.<domain>`, or null (RFC 8461 §3.1). */
async function policyId(resolver: MailResolver, domain: string): Promise<string | null> {
  let records: string[][];
  try {
    records = await resolver.resolveTxt(`_mta-sts.${domain}`);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
  const sts = records.map((r) => r.join('')).filter((r) => /^v=STSv1\s*(;|$)/.test(r));
  if (sts.length !== 1) return null;
  const id = /(?:^|;)\s*id=([A-Za-z0-9]{1,32})\s*(;|$)/.exec(sts[0]!);
  return id ? id[1]! : null;
}

interface Cached {
  id: string;
  policy: MtaStsPolicy;
  expiresAt: number;
}

/**
 * How long a failed policy fetch is remembered for its domain and policy id: meanwhile
 * its messages go on as the failure decided (the cached policy, else none) without each
 * waiting for another fetch, which may take the whole fetch deadline (10 s).
 */
export const FAILED_FETCH_MS = 5 * 60_000;
/** How often expired policies and failures are looked for, at most. */
const PRUNE_EVERY_MS = 60_000;
/** Domains whose policy is kept at most (a few hundred bytes each). */
const MAX_POLICIES = 100_000;

/**
 * Policy discovery with an in-process cache (RFC 8461 §3, §5.1): the TXT record says
 * whether a policy exists and its id; the policy is fetched again when the id changes.
 * A cached policy stays in force while DNS or HTTPS fails (that is the point of it).
 * Messages to one domain asking at once share one fetch, and a failed fetch is not
 * tried again for FAILED_FETCH_MS unless the id changes.
 */
export class MtaSts {
  private cache = new Map<string, Cached>();
  private failed = new Map<string, { id: string; until: number }>();
  private fetching = new Map<string, { id: string; policy: Promise<MtaStsPolicy | null> }>();
  private pruned = 0;
  constructor(
    private readonly opts: {
      resolver: MailResolver;
      fetcher: PolicyFetcher;
      ignore?: string[];
      now?: () => number;
      onError?: (domain: string, err: unknown) => void;
    },
  ) {}

  async policyFor(domain: string): Promise<MtaStsPolicy | null> {
    const d = domain.toLowerCase();
    if (this.opts.ignore?.includes(d)) return null;
    const now = (this.opts.now ?? Date.now)();
    const cached = this.cache.get(d);
    const valid = cached && cached.expiresAt > now ? cached : null;
    let id: string | null;
    try {
      id = await policyId(this.opts.resolver, d);
    } catch (err) {
      this.opts.onError?.(d, err);
      return valid?.policy ?? null;
    }
    if (id === null) return valid?.policy ?? null;
    if (valid && valid.id === id) return valid.policy;
    const failed = this.failed.get(d);
    if (failed && failed.until <= now) this.failed.delete(d);
    else if (failed?.id === id) return valid?.policy ?? null;
    let fetch = this.fetching.get(d);
    if (!fetch || fetch.id !== id) {
      const policy = this.fetch(d, id, now).finally(() => {
        if (this.fetching.get(d) === entry) this.fetching.delete(d);
      });
      const entry = { id, policy };
      this.fetching.set(d, (fetch = entry));
    }
    return (await fetch.policy) ?? valid?.policy ?? null;
  }

  /** Policies and failed fetches held (expired ones go at the next fetch, once a minute at most). */
  get held(): number {
    return this.cache.size + this.failed.size;
  }

  /**
   * Drops what has expired: a policy past its max_age is fetched again when its domain
   * is next asked for, and a domain mail goes to once would otherwise stay for the life
   * of the process. Past MAX_POLICIES, the least recently fetched go first.
   */
  private prune(now: number): void {
    if (now - this.pruned < PRUNE_EVERY_MS) return;
    this.pruned = now;
    for (const [d, c] of this.cache) if (c.expiresAt <= now) this.cache.delete(d);
    for (const [d, f] of this.failed) if (f.until <= now) this.failed.delete(d);
    for (const d of this.cache.keys()) {
      if (this.cache.size <= MAX_POLICIES) break;
      this.cache.delete(d);
    }
  }

  /** Fetches and caches the policy `id` of `d`; null (and remembered) when that fails. */
  private async fetch(d: string, id: string, now: number): Promise<MtaStsPolicy | null> {
    this.prune(now);
    try {
      const policy = parsePolicy(await this.opts.fetcher(d));
      if (!policy) throw new Error('invalid policy');
      // last in the map's order: the most recently fetched
      this.cache.delete(d);
      this.cache.set(d, { id, policy, expiresAt: now + policy.maxAge * 1000 });
      this.failed.delete(d);
      return policy;
    } catch (err) {
      this.opts.onError?.(d, err);
      this.failed.set(d, { id, until: now + FAILED_FETCH_MS });
      return null;
    }
  }
}

/**
 * The real fetcher: HTTPS GET on `mta-sts.<domain>`, certificate verified, no
 * redirects, 200 only, at most 64 KiB (RFC 8461 §3.3), done within `timeoutMs` (10 s) as a
 * whole. The host name is resolved
 * through the shared resolver like every other lookup.
 */
export function httpsPolicyFetcher(opts: {
  resolver: MailResolver;
  ca?: string | Buffer | (string | Buffer)[];
  port?: number;
  timeoutMs?: number;
}): PolicyFetcher {
  const lookup: LookupFunction = (hostname, options, cb) => {
    const all = (options as { all?: boolean }).all;
    opts.resolver.resolve4(hostname).then(
      (addrs) => {
        if (!addrs.length) return cb(Object.assign(new Error('no address'), { code: 'ENOTFOUND' }), '', 4);
        if (all)
          (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(
            null,
            addrs.map((a) => ({ address: a, family: 4 })),
          );
        else cb(null, addrs[0]!, 4);
      },
      (err: NodeJS.ErrnoException) => cb(err, '', 4),
    );
  };
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return (domain) =>
    new Promise<string>((resolve, reject) => {
      const host = `mta-sts.${domain}`;
      const req = request(
        {
          host,
          servername: host,
          port: opts.port ?? 443,
          path: '/.well-known/mta-sts.txt',
          method: 'GET',
          lookup,
          ...(opts.ca ? { ca: opts.ca } : {}),
          timeout: timeoutMs,
        },
        (res) => {
          if (res.statusCode !== 200) {
            res.resume();
            return reject(new Error(`policy fetch: HTTP ${res.statusCode}`));
          }
          let size = 0;
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > 65_536) {
              req.destroy(new Error('policy larger than 64 KiB'));
              return;
            }
            chunks.push(c);
          });
          res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error('policy fetch timed out')));
      // `timeout` is the socket's idle time: a server that sends a byte now and then would
      // hold the fetch (and the message slot that waits on it) for as long as it likes
      const whole = setTimeout(
        () => req.destroy(new Error(`policy fetch took longer than ${timeoutMs} ms`)),
        timeoutMs,
      );
      req.on('close', () => clearTimeout(whole));
      req.on('error', reject);
      req.end();
    });
}
